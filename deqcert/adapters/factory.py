"""A user's model for a run: ``--model FILE.py:FACTORY`` (or ``package.module:FACTORY``) and
``--weights PATH``.

``FACTORY()`` returns an :class:`~deqcert.protocols.EquilibriumModel`, or a
mapping of :func:`deqcert.adapt` arguments.  Weights are a safetensors file or
a PyTorch state dict (``.pt``/``.pth``) read with ``torch.load(weights_only=True)``,
which never unpickles code.  :func:`open_factory` returns the same
:class:`~deqcert.checkpoint.OpenedCheckpoint` a checkpoint run gets: its
``sha256`` is the weights file's (or, without weights, the digest of the
model's state dict), so results resume and merge like any other run.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .._atomic import replacing
from ..checkpoint import OpenedCheckpoint, _check_finite, file_sha256
from ..errors import CheckpointError, OptionError
from ..models.check import check_model
from .plain import adapt

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")


def load_factory(spec: str) -> Any:
    """The callable ``spec`` names: ``path/to/file.py:NAME`` or ``package.module:NAME``."""
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise OptionError(f"--model {spec!r}: expected FILE.py:FACTORY or package.module:FACTORY")
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise OptionError(f"--model {spec!r}: file not found: {path}")
        module_name = (
            f"deqcert_user_model_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}"
        )
        module = sys.modules.get(module_name)
        if module is None:
            loader_spec = importlib.util.spec_from_file_location(module_name, path)
            assert loader_spec is not None and loader_spec.loader is not None
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[module_name] = module
            try:
                loader_spec.loader.exec_module(module)
            except Exception as exc:
                del sys.modules[module_name]
                raise OptionError(
                    f"--model {spec!r}: importing {path} failed: {_first(exc)}"
                ) from None
    else:
        try:
            module = importlib.import_module(where)
        except Exception as exc:
            raise OptionError(f"--model {spec!r}: cannot import {where}: {_first(exc)}") from None
    factory = getattr(module, name, None)
    if not callable(factory):
        raise OptionError(f"--model {spec!r}: {where} has no callable {name}")
    return factory


def build_model(spec: str) -> Any:
    """``FACTORY()``, adapted when it returns :func:`deqcert.adapt` arguments, protocol-checked."""
    factory = load_factory(spec)
    try:
        model = factory()
    except Exception as exc:
        raise OptionError(f"--model {spec!r}: FACTORY() failed: {_first(exc)}") from None
    if isinstance(model, Mapping):
        model = adapt(**dict(model))
    check_model(model, purpose="serve")
    return model


def load_state(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors file or a ``.pt``/``.pth`` file (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in WEIGHT_SUFFIXES:
        raise CheckpointError(
            f"weights {path}: unsupported type '{suffix}'; accepted: {', '.join(WEIGHT_SUFFIXES)}"
        )
    if suffix == ".safetensors":
        try:
            return dict(load_file(str(path), device="cpu"))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"weights {path}: cannot read tensors: {_first(exc)}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, refused globals, truncated files
        raise CheckpointError(
            f"weights {path}: not a plain state dict (read with weights_only=True): {_first(exc)}"
        ) from None
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointError(
            f"weights {path}: expected a state dict (names -> tensors), "
            f"got {type(state).__name__}; "
            "save model.state_dict()"
        )
    return dict(state)


def state_sha256(model: Any) -> str:
    """A SHA-256 over the model's state dict (names, dtypes, shapes and bytes)."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().to("cpu").contiguous()
        digest.update(f"{key}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def open_factory(
    spec: str, weights: str | os.PathLike[str] | None, device: str | torch.device = "cpu"
) -> OpenedCheckpoint:
    """The user's model built by ``spec``, with ``weights`` loaded (strict), on ``device``, eval."""
    model = build_model(spec)
    metadata: dict[str, Any] = {}
    sha = None
    if weights is not None:
        state = load_state(weights)
        _check_finite(Path(weights), state)
        loader = getattr(model, "load_weights", None)
        try:
            if callable(loader):
                loader(state)
            else:
                model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(
                f"weights {weights} do not fit --model {spec}: {_first(exc)}"
            ) from None
        sha = file_sha256(weights)
        metadata.update(_safetensors_metadata(Path(weights)))
    model = model.to(device).eval()
    hook = getattr(model, "before_certificate", None)
    if callable(hook):
        hook()
    state_digest = state_sha256(model)
    metadata.update(
        factory=spec,
        weights=None if weights is None else str(weights),
        weights_sha256=sha,
        state_sha256=state_digest,
        model_class=type(model).__name__,
    )
    path = Path(weights) if weights is not None else Path(spec.rpartition(":")[0])
    return OpenedCheckpoint(path, model, metadata, sha or state_digest)


def convert(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Write the state dict in ``source`` (``.pt``/``.pth``) as the safetensors file ``target``."""
    source, target = Path(source), Path(target)
    if target.suffix.lower() != ".safetensors":
        raise OptionError(f"convert: the output must end in .safetensors, got {target.name}")
    if source.suffix.lower() == ".safetensors":
        raise OptionError(f"convert: {source.name} is already a safetensors file")
    state = load_state(source)
    tensors = {k: v.detach().clone().contiguous() for k, v in state.items()}  # unshare storage
    metadata = {
        "converted_from": json.dumps(source.name),
        "source_sha256": json.dumps(file_sha256(source)),
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    with replacing(target) as tmp:
        save_file(tensors, tmp, metadata=metadata)
    return target


def _safetensors_metadata(path: Path) -> dict[str, Any]:
    """JSON-decoded safetensors metadata (e.g. a training ``sigma``); {} for other files."""
    if path.suffix.lower() != ".safetensors":
        return {}
    from ..safetensors_header import read_header

    out: dict[str, Any] = {}
    for key, value in read_header(path).metadata.items():
        try:
            out[key] = json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            out[key] = value
    return out


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
