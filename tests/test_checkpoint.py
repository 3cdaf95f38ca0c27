"""Safetensors checkpoints: round trip, metadata, and every error path."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from deqcert import (
    CheckpointError,
    checkpoint_metadata,
    create_model,
    default_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from deqcert.models.mlpdeq import MLPDEQ

OPTIONS = {"hidden": 8, "image_size": 6}


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Any, Path]:
    torch.manual_seed(0)
    model = create_model("mlpdeq", **OPTIONS)
    path = save_checkpoint(
        model, tmp_path / "model.safetensors", {"sigma": 0.5, "metrics": {"noisy_accuracy": 0.9}}
    )
    return model, path


def _rewrite(path: Path, tensors: dict[str, torch.Tensor], **meta: Any) -> None:
    raw = {k: json.dumps(v) for k, v in checkpoint_metadata(path).items()}
    raw.update({k: json.dumps(v) for k, v in meta.items()})
    save_file(tensors, str(path), metadata=raw)


def test_round_trip(saved: tuple[Any, Path]) -> None:
    model, path = saved
    loaded = load_checkpoint(path)
    assert isinstance(loaded, MLPDEQ) and not loaded.training
    assert loaded.options == model.options
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    x = torch.rand(2, 1, 6, 6)
    assert torch.allclose(loaded(x), model(x))


def test_metadata_is_complete_and_decoded(saved: tuple[Any, Path]) -> None:
    _, path = saved
    meta = checkpoint_metadata(path)
    assert meta["model"] == "mlpdeq"
    assert meta["model_options"]["hidden"] == 8
    assert meta["sigma"] == 0.5 and meta["metrics"] == {"noisy_accuracy": 0.9}
    assert meta["format_version"] == 1 and isinstance(meta["deqcert_version"], str)


def test_save_is_atomic_and_leaves_no_temp_files(saved: tuple[Any, Path]) -> None:
    model, path = saved
    save_checkpoint(model, path)  # overwrite in place
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.safetensors"]
    assert path.stat().st_mode & 0o044  # readable by others, unlike mkstemp's 0600


def test_unserialisable_metadata_keeps_old_file(saved: tuple[Any, Path]) -> None:
    model, path = saved
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match="not JSON-serialisable"):
        save_checkpoint(model, path, {"bad": object()})
    assert path.read_bytes() == before


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found: .*nope.safetensors"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_not_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"\x80\x04 definitely not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(path)


def test_truncated(saved: tuple[Any, Path]) -> None:
    _, path = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda t: t.pop("recurrent.weight"), "missing tensors: recurrent.weight"),
        (lambda t: t.update(stowaway=torch.zeros(2)), "unexpected tensors: stowaway"),
        (
            lambda t: t.update({"output_layer.bias": torch.zeros(7)}),
            r"'output_layer.bias' has shape \(7,\).*\(10,\)",
        ),
    ],
    ids=["missing", "extra", "wrong-shape"],
)
def test_tensor_mismatch_is_named(
    saved: tuple[Any, Path], edit: Callable[[dict[str, torch.Tensor]], object], match: str
) -> None:
    _, path = saved
    tensors = load_file(str(path))
    edit(tensors)
    _rewrite(path, tensors)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_unknown_model_lists_known(saved: tuple[Any, Path]) -> None:
    _, path = saved
    _rewrite(path, load_file(str(path)), model="resnet9000")
    with pytest.raises(CheckpointError, match="unknown model 'resnet9000'. Known models: .*mdeq"):
        load_checkpoint(path)


def test_bad_model_options(saved: tuple[Any, Path]) -> None:
    _, path = saved
    _rewrite(path, load_file(str(path)), model_options={"hidden": -1})
    with pytest.raises(CheckpointError, match="cannot rebuild model 'mlpdeq'"):
        load_checkpoint(path)


def test_unsupported_format_version(saved: tuple[Any, Path]) -> None:
    _, path = saved
    _rewrite(path, load_file(str(path)), format_version=99)
    with pytest.raises(CheckpointError, match="unsupported checkpoint format_version 99"):
        load_checkpoint(path)


def test_plain_safetensors_without_deqcert_metadata(tmp_path: Path) -> None:
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not JSON; not a deqcert checkpoint"):
        load_checkpoint(path)


def test_unregistered_model_refused(tmp_path: Path) -> None:
    class Mine(MLPDEQ):
        registry_name = ""

    with pytest.raises(CheckpointError, match="Mine is not a registered model"):
        save_checkpoint(Mine(**OPTIONS), tmp_path / "x.safetensors")


def test_default_checkpoint_loads_trained_mdeq() -> None:
    path = default_checkpoint(0.25)
    assert path.is_file() and path.stat().st_size < 1_000_000
    meta = checkpoint_metadata(path)
    assert meta["model"] == "mdeq" and meta["sigma"] == 0.25
    assert meta["dataset"]["name"] == "mnist-sample"
    assert meta["metrics"]["noisy_accuracy"] >= 0.97
    model = load_checkpoint(path)
    assert model.num_classes == 10 and not model.training


def test_default_checkpoint_converges_and_classifies_noisy_digits() -> None:
    from deqcert import create_dataset

    model = load_checkpoint(default_checkpoint(0.25))
    data = create_dataset("mnist-sample", split="test")
    x = torch.stack([data[i][0] for i in range(100)])
    noisy = x + 0.25 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    logits, result = model.solve(noisy)  # the reference solve: Anderson, rel tol 1e-3, 30 steps
    assert float(result.converged.float().mean()) >= 0.98
    assert float((logits.argmax(1) == data.labels[:100]).float().mean()) >= 0.9


def test_default_checkpoint_unknown_sigma_lists_available() -> None:
    with pytest.raises(CheckpointError, match=r"sigma=0.33. Available sigmas: .*0\.25"):
        default_checkpoint(0.33)
