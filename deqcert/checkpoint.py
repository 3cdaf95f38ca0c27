"""Checkpoints: safetensors files that rebuild their model from the file alone.

The tensors are the model's ``state_dict``; the safetensors metadata (string
to string) holds JSON-encoded values: the registry name and options of the
model, and whatever the caller adds (training config, dataset, sigma,
metrics), plus the package and format versions.  Nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ._atomic import replacing
from .errors import CheckpointError, DeqcertError
from .memory import check_fits
from .models.check import check_model, first_nonfinite
from .options import short_repr
from .registry import create_model, list_models, models
from .safetensors_header import TensorInfo, read_header

FORMAT_VERSION = 1
"""Version of the metadata layout; bumped on incompatible changes."""

CHECKPOINT_DIR = "checkpoints"
DEFAULT_NAME = "mdeq-small-sigma{sigma}.safetensors"
_SIGMA_PATTERN = re.compile(r"^mdeq-small-sigma(?P<sigma>[0-9.]+)\.safetensors$")


def model_name(model: nn.Module) -> str:
    """The registry name of ``model``'s class (raises if it is not registered)."""
    name = getattr(model, "registry_name", "")
    if name:
        return str(name)
    for candidate in list_models():
        try:
            if models.get(candidate) is type(model):
                return candidate
        except DeqcertError:
            continue
    raise CheckpointError(
        f"{type(model).__name__} is not a registered model; register it under "
        "deqcert.models to save it"
    )


def save_checkpoint(
    model: nn.Module, path: str | os.PathLike[str], metadata: dict[str, Any] | None = None
) -> Path:
    """Write ``model``'s weights and ``metadata`` to ``path`` atomically; return the path.

    ``metadata`` values may be any JSON-serialisable objects (typically
    ``train_config``, ``dataset``, ``sigma`` and ``metrics``); ``model``,
    ``model_options``, ``deqcert_version`` and ``format_version`` are filled in.
    """
    from . import __version__

    check_model(model, purpose="save")
    path = Path(path)
    settings: Any = getattr(model, "options", None)
    if not hasattr(settings, "model_dump"):
        raise CheckpointError(
            f"{type(model).__name__} has no pydantic 'options' to record; save its state dict "
            "(torch.save(model.state_dict(), 'w.pt')) and certify it with --model FACTORY "
            "--weights w.pt"
        )
    options = settings.model_dump(mode="json")
    record: dict[str, Any] = dict(metadata or {})
    record.update(
        model=model_name(model),
        model_options=options,
        deqcert_version=__version__,
        format_version=FORMAT_VERSION,
    )
    try:
        encoded = {key: json.dumps(value, sort_keys=True) for key, value in record.items()}
    except TypeError as exc:
        raise CheckpointError(f"checkpoint metadata is not JSON-serialisable: {exc}") from None
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        save_file(tensors, tmp, metadata=encoded)
    return path


def checkpoint_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The decoded metadata of a checkpoint (without loading its tensors)."""
    return _decode_metadata(_existing(path), read_header(_existing(path)).metadata)


def _decode_metadata(path: Path, raw: dict[str, str]) -> dict[str, Any]:
    decoded: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            decoded[key] = json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            raise CheckpointError(
                f"{path}: metadata entry {key[:40]!r} is not JSON; not a deqcert checkpoint"
            ) from None
    return decoded


@dataclass(frozen=True)
class OpenedCheckpoint:
    """A checkpoint read once: its model (eval mode), decoded metadata and file SHA-256."""

    path: Path
    model: Any
    metadata: dict[str, Any]
    sha256: str


def open_checkpoint(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> OpenedCheckpoint:
    """Read a checkpoint once for a run: the model, its metadata and the file's SHA-256.

    The metadata is decoded once and serves both to rebuild the model and to
    describe the run (results headers record the SHA-256).
    """
    path = _existing(path)
    metadata = checkpoint_metadata(path)
    return OpenedCheckpoint(path, _load(path, metadata, device), metadata, file_sha256(path))


def load_checkpoint(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Any:
    """Rebuild the model described by the checkpoint, load its weights, return it in eval mode."""
    path = _existing(path)
    return _load(path, checkpoint_metadata(path), device)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load(path: Path, meta: dict[str, Any], device: str | torch.device) -> Any:
    """The model ``meta`` describes, with the weights of ``path``, on ``device`` in eval mode.

    Nothing of the model's size is allocated before the file's tensor index
    has been checked against the model's state dict, built on the ``meta``
    device from the metadata (names, shapes, dtypes), and the memory it needs
    against what is available; the weights must be finite.
    """
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: unsupported checkpoint format_version {short_repr(version, 20)} "
            f"(this deqcert reads version {FORMAT_VERSION})"
        )
    name, options = meta.get("model"), meta.get("model_options")
    if not isinstance(name, str) or not isinstance(options, dict):
        raise CheckpointError(f"{path}: metadata lacks 'model' and 'model_options'")
    if name not in list_models():
        raise CheckpointError(
            f"{path}: unknown model {name[:40]!r}. "
            f"Known models: {', '.join(list_models()) or 'none'}"
        )
    header = read_header(path)
    with torch.device("meta"):
        skeleton = _build(path, name, options)
    _check_tensors(path, skeleton.state_dict(), header.tensors)
    check_fits(2 * header.nbytes, f"checkpoint {path.name}", "is it the right file?")
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read tensors: {exc}") from None
    _check_finite(path, tensors)
    model = _build(path, name, options)
    model.load_state_dict(tensors, strict=True)
    return model.to(device).eval()


def _build(path: Path, name: str, options: dict[str, Any]) -> Any:
    try:
        return create_model(name, **options)
    except DeqcertError as exc:
        raise CheckpointError(f"{path}: cannot rebuild model {name!r}: {exc}") from None
    except (RuntimeError, ValueError, TypeError, OverflowError, NotImplementedError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: cannot rebuild model {name!r}: {first}") from None


def default_checkpoint(sigma: float = 0.25) -> Path:
    """Path of the bundled ``mdeq`` (small) checkpoint trained at noise level ``sigma``."""
    folder = Path(str(resources.files("deqcert").joinpath(CHECKPOINT_DIR)))
    available = bundled_sigmas()
    for candidate in available:
        if abs(candidate - sigma) < 1e-9:
            return folder / DEFAULT_NAME.format(sigma=_format_sigma(candidate))
    listed = ", ".join(_format_sigma(s) for s in available) or "none"
    raise CheckpointError(f"no bundled checkpoint for sigma={sigma}. Available sigmas: {listed}")


def bundled_checkpoints() -> dict[str, Path]:
    """Short name -> path of every bundled checkpoint (``default`` and each file's stem)."""
    folder = Path(str(resources.files("deqcert").joinpath(CHECKPOINT_DIR)))
    found = {p.stem: p for p in sorted(folder.glob("*.safetensors"))} if folder.is_dir() else {}
    try:
        found = {"default": default_checkpoint(), **found}
    except CheckpointError:
        pass
    return found


def resolve_checkpoint(name: str | os.PathLike[str]) -> Path:
    """A checkpoint path from a path or a bundled checkpoint's short name.

    ``default``, ``mdeq-small-sigma0.5`` (with or without ``.safetensors``):
    a bundled file, unless a file of that name exists where it is run.
    """
    text = os.fspath(name)
    if text == "default":
        return default_checkpoint()
    path = Path(text)
    if path.is_file():
        return path
    bundled = bundled_checkpoints()
    short = text.removesuffix(".safetensors")
    if short in bundled and path.parent == Path("."):
        return bundled[short]
    return path


def bundled_sigmas() -> list[float]:
    """Noise levels of the bundled checkpoints, ascending."""
    folder = Path(str(resources.files("deqcert").joinpath(CHECKPOINT_DIR)))
    found = []
    for path in folder.glob("*.safetensors") if folder.is_dir() else []:
        match = _SIGMA_PATTERN.match(path.name)
        if match:
            found.append(float(match["sigma"]))
    return sorted(found)


def _format_sigma(sigma: float) -> str:
    return f"{sigma:g}" if "." in f"{sigma:g}" else f"{sigma:.1f}"


def _existing(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if not path.is_file():
        names = ", ".join(bundled_checkpoints()) or "none"
        raise CheckpointError(f"checkpoint not found: {path} (bundled checkpoints: {names})")
    return path


def _check_tensors(
    path: Path, expected: dict[str, torch.Tensor], found: dict[str, TensorInfo]
) -> None:
    """The file's tensor index must match the model's state dict: names, shapes, kinds of dtype."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing tensors: {_names(missing)}")
        if extra:
            parts.append(f"unexpected tensors: {_names(extra)}")
        raise CheckpointError(f"{path} does not match its model: " + "; ".join(parts))
    for key, tensor in expected.items():
        info = found[key]
        if info.shape != tuple(tensor.shape):
            raise CheckpointError(
                f"{path}: tensor {key!r} has shape {info.shape}, "
                f"the model expects {tuple(tensor.shape)}"
            )
        if info.floating != tensor.is_floating_point():
            want = "floating-point" if tensor.is_floating_point() else str(tensor.dtype)
            raise CheckpointError(
                f"{path}: tensor {key!r} is stored as {info.dtype}, the model expects {want} "
                "values; refusing to cast"
            )


def _check_finite(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    bad = first_nonfinite(tensors.items())
    if bad is not None:
        key, count = bad
        raise CheckpointError(
            f"{path}: tensor {key!r} holds {count} NaN or infinite value(s); the weights "
            "of a model to certify must be finite"
        )


def _names(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
