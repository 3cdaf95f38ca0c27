"""Shared fixtures: a tiny trained checkpoint and a CLI runner (small and fast on purpose)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner, Result

# One torch thread: the test tensors are small, and subprocesses started by the
# tests (the CLI) inherit OMP_NUM_THREADS; oversubscribing 2 cores is far slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

FAST = ["--n0", "10", "--n", "200", "--batch", "50", "--alpha", "0.01",
        "--set", "certifier.reference_samples=40"]
"""CLI flags for a quick (statistically weak) certification of the tiny model."""


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ``mlpdeq`` (16 hidden units) trained for a second on the bundled MNIST sample."""
    from deqcert.train import TrainConfig, train

    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    config = TrainConfig.model_validate(
        {
            "model": "mlpdeq",
            "model_options": {"hidden": 16},
            "epochs": 1,
            "train_limit": 1000,
            "batch_size": 50,
            "lr": 1e-2,
            "backward": "jfb",
            "sigma": 0.25,
            "eval": {"limit": 50},
        }
    )
    train(config, out=path, progress=False)
    return path


@pytest.fixture
def cli() -> Callable[..., Result]:
    """Run ``deqcert ARGS`` in-process; stdout and stderr are kept apart."""
    from deqcert.cli import app

    def run(args: Sequence[str], env: dict[str, str] | None = None) -> Result:
        return CliRunner().invoke(app, [str(a) for a in args], env=env)

    return run


@pytest.fixture
def fast_certify(tiny_checkpoint: Path) -> list[str]:
    """``certify`` arguments for the tiny checkpoint with small sample sizes."""
    return ["certify", "--checkpoint", str(tiny_checkpoint), "--quiet", *FAST]
