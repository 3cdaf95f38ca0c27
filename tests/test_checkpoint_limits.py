"""Hostile checkpoints: judged from the header and a meta-device model before any allocation."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from deqcert import (
    CheckpointError,
    checkpoint_metadata,
    create_model,
    load_checkpoint,
    save_checkpoint,
)
from deqcert.memory import check_fits, format_bytes
from deqcert.safetensors_header import MAX_HEADER_BYTES, read_header

OPTIONS = {"hidden": 8, "image_size": 6}
MEMORY_LIMIT = 8_000_000 * 1024  # `ulimit -v 8000000`


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(create_model("mlpdeq", **OPTIONS), tmp_path / "model.safetensors",
                           {"sigma": 0.25})


def _rewrite(path: Path, tensors: dict[str, torch.Tensor], **meta: Any) -> None:
    raw = {k: json.dumps(v) for k, v in checkpoint_metadata(path).items()}
    raw.update({k: json.dumps(v) for k, v in meta.items()})
    save_file(tensors, str(path), metadata=raw)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused(saved: Path, value: float) -> None:
    tensors = load_file(str(saved))
    tensors["recurrent.weight"][0, 0] = value  # one bad weight is enough
    _rewrite(saved, tensors)
    with pytest.raises(CheckpointError, match=r"'recurrent.weight' holds 1 NaN or infinite"):
        load_checkpoint(saved)


def test_integer_weights_are_refused_not_cast(saved: Path) -> None:
    tensors = load_file(str(saved))
    tensors["recurrent.weight"] = torch.ones_like(tensors["recurrent.weight"], dtype=torch.int64)
    _rewrite(saved, tensors)
    with pytest.raises(CheckpointError, match="stored as I64.*refusing to cast"):
        load_checkpoint(saved)


@pytest.mark.parametrize(
    ("model", "options"),
    [("mlpdeq", {"hidden": 40_000, "image_size": 6}),  # 6.4 GB of recurrent weights
     ("mdeq", {"widths": [1_000_000_000]})],  # hundreds of GB
)
def test_huge_model_options_fail_on_shapes_before_allocating(
    saved: Path, model: str, options: dict[str, Any]
) -> None:
    _rewrite(saved, load_file(str(saved)), model=model, model_options=options)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError, match="does not match its model|has shape|cannot rebuild"):
        load_checkpoint(saved)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 200_000  # nothing near the model's size was allocated


def test_an_oversized_header_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "bomb.safetensors"
    path.write_bytes((10**12).to_bytes(8, "little") + b"{}")
    with pytest.raises(CheckpointError, match="header of 1000000000000 bytes"):
        read_header(path)
    assert MAX_HEADER_BYTES == 16 << 20


def test_tensor_data_beyond_the_end_of_the_file_is_refused(saved: Path) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data[:-16])
    with pytest.raises(CheckpointError, match="beyond the end of the file"):
        load_checkpoint(saved)


def test_a_model_that_does_not_fit_in_memory_is_refused(
    saved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import deqcert.memory as memory

    monkeypatch.setattr(memory, "available_bytes", lambda: 100)
    with pytest.raises(Exception, match="needs about .* but only 100 B is available"):
        load_checkpoint(saved)
    assert format_bytes(1536) == "1.5 KiB"
    check_fits(10, "nothing")  # fits: no error


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def test_cli_refuses_a_huge_checkpoint_under_ulimit(saved: Path, tmp_path: Path) -> None:
    _rewrite(saved, load_file(str(saved)), model_options={"hidden": 40_000, "image_size": 6})
    out = tmp_path / "run.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "deqcert.cli", "certify", "--checkpoint", str(saved),
         "--out", str(out), "--quiet"],
        capture_output=True, text=True, preexec_fn=_limited, timeout=300,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "has shape" in lines[0], lines
    assert not out.exists()
