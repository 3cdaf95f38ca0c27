"""Bad-input matrix: every user mistake is one line on stderr, exit code 2, no file touched."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import FAST
from safetensors.torch import load_file, save_file
from typer.testing import Result

from deqcert import create_model, save_checkpoint
from deqcert.data.base import ImageDataset
from deqcert.options import ComponentOptions
from deqcert.registry import datasets

Setup = Callable[[Path, Path], list[str]]
"""Given a scratch folder and the tiny checkpoint, write any files and return the CLI args."""


class NaNImages(ImageDataset):
    """Four 28x28 images; the third has a NaN pixel."""

    class Options(ComponentOptions):
        """No options."""

    num_classes = 10
    input_shape = (1, 28, 28)

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = torch.full(self.input_shape, 0.5)
        if index == 2:
            x[0, 3, 3] = float("nan")
        return x, index


@pytest.fixture(autouse=True)
def nan_dataset() -> Any:
    datasets.register("nan-images", NaNImages, override=True)
    yield
    datasets.unregister("nan-images")


def certify(checkpoint: Path | str, *extra: Any) -> list[str]:
    return ["certify", "--checkpoint", str(checkpoint), *FAST, "--out", "out.jsonl",
            *map(str, extra)]


def _write(path: Path, data: str | bytes) -> Path:
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data)
    return path


def truncated(tmp: Path, ckpt: Path) -> list[str]:
    data = ckpt.read_bytes()
    return certify(_write(tmp / "cut.safetensors", data[: len(data) // 2]))


def pickled(tmp: Path, ckpt: Path) -> list[str]:
    path = tmp / "model.safetensors"
    torch.save({"w": torch.zeros(3)}, path)
    return certify(path)


def unknown_model(tmp: Path, ckpt: Path) -> list[str]:
    path = tmp / "alien.safetensors"
    meta = {"model": json.dumps("alien-deq"), "model_options": "{}", "format_version": "1"}
    save_file({"w": torch.zeros(2)}, str(path), metadata=meta)
    return certify(path)


def shape_mismatch(tmp: Path, ckpt: Path) -> list[str]:
    path = tmp / "wide.safetensors"
    save_checkpoint(create_model("mlpdeq", hidden=16), path, {"sigma": 0.25})
    tensors = load_file(str(path))
    tensors["recurrent.weight"] = torch.zeros(4, 4)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    save_file(tensors, str(path), metadata=meta)
    return certify(path)


def wrong_image_shape(tmp: Path, ckpt: Path) -> list[str]:
    path = tmp / "small.safetensors"
    save_checkpoint(create_model("mlpdeq", hidden=4, image_size=8), path, {"sigma": 0.25})
    return certify(path)  # mnist-sample images are 28x28


def config_file(text: str, suffix: str = ".toml") -> Setup:
    def setup(tmp: Path, ckpt: Path) -> list[str]:
        return certify(ckpt, "--config", _write(tmp / f"run{suffix}", text))

    return setup


def flags(*extra: Any) -> Setup:
    return lambda tmp, ckpt: certify(ckpt, *extra)


def out_path(make: Callable[[Path], Path]) -> Setup:
    def setup(tmp: Path, ckpt: Path) -> list[str]:
        return [*certify(ckpt)[:-2], "--out", str(make(tmp))]

    return setup


def _under_a_file(tmp: Path) -> Path:
    return _write(tmp / "plain.txt", "not a directory") / "out.jsonl"


def _read_only_dir(tmp: Path) -> Path:
    folder = tmp / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    return folder / "out.jsonl"


def resume_other_run(tmp: Path, ckpt: Path) -> list[str]:
    header = {"type": "header", "config": {"n": 5}, "checkpoint": {"sha256": "0"},
              "dataset": {"length": 1}}
    _write(tmp / "out.jsonl", json.dumps(header) + "\n")
    return certify(ckpt)


CASES: dict[str, tuple[Setup, str]] = {
    # name: (setup, a word the error line must contain)
    "missing checkpoint": (lambda t, c: certify(t / "nope.safetensors"), "not found"),
    "truncated checkpoint": (truncated, "safetensors"),
    "non-safetensors checkpoint": (pickled, "safetensors"),
    "metadata names an unknown model": (unknown_model, "alien-deq"),
    "tensor shape mismatch": (shape_mismatch, "shape"),
    "unknown solver": (flags("--solver", "newton"), "newton"),
    "unknown certifier": (flags("--certifier", "magic"), "magic"),
    "unknown noise": (flags("--noise", "pink"), "pink"),
    "unknown dataset": (flags("--dataset", "imagenet-9"), "imagenet-9"),
    "mistyped solver option": (flags("--set", "solver.max_iters=3"), "max_iters"),
    "mistyped flag": (flags("--n00", "3"), "--n00"),
    "zero sigma": (flags("--sigma", "0"), "sigma"),
    "negative sigma": (flags("--sigma", "-0.5"), "sigma"),
    "alpha zero": (flags("--alpha", "0"), "alpha"),
    "alpha above one": (flags("--alpha", "1.5"), "alpha"),
    "n0 zero": (flags("--n0", "0"), "n0"),
    "n zero": (flags("--n", "0"), "'n'"),
    "reference samples above n": (
        flags("--set", "certifier.reference_samples=500"), "reference_samples"
    ),
    "malformed TOML config": (config_file("n = [1,\n"), "malformed"),
    "malformed YAML config": (config_file("n: [1, 2\nalpha: :\n", ".yaml"), "malformed"),
    "unknown key in config file": (config_file("samples = 100\n"), "samples"),
    "mistyped value in config file": (config_file('skip = "every"\n'), "skip"),
    "missing config file": (lambda t, c: certify(c, "--config", t / "none.toml"), "not found"),
    "index out of range": (flags("--indices", "1000"), "out of range"),
    "malformed indices": (flags("--indices", "3-x"), "indices"),
    "empty selection": (config_file("indices = []\n"), "empty selection"),
    "bad shard": (flags("--shard", "3/3"), "shard"),
    "output directory missing": (out_path(lambda t: t / "no" / "such" / "out.jsonl"),
                                 "does not exist"),
    "output parent is a file": (out_path(_under_a_file), "not a directory"),
    "output directory read-only": (out_path(_read_only_dir), "cannot write"),
    "resume a different run": (resume_other_run, "different run"),
    "input image of wrong shape": (wrong_image_shape, "shape"),
    "NaN in an input": (flags("--dataset", "nan-images", "--indices", "0-3"), "NaN"),
    "unknown device": (flags("--device", "tpu"), "device"),
}


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(folder.rglob("*"))
    }


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2_and_no_output(
    name: str,
    tiny_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cli: Callable[..., Result],
) -> None:
    if name == "output directory read-only" and os.geteuid() == 0:
        pytest.skip("root ignores directory permissions")
    setup, word = CASES[name]
    monkeypatch.chdir(tmp_path)
    args = setup(tmp_path, tiny_checkpoint)
    before = _snapshot(tmp_path)
    result = cli(args)
    lines = result.stderr.splitlines()
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.exception)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("deqcert: error: ")
    assert word.lower() in lines[0].lower(), lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert _snapshot(tmp_path) == before  # nothing created, nothing changed


def test_matrix_covers_at_least_twenty_cases() -> None:
    assert len(CASES) >= 20
