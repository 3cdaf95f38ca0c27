"""Noise-augmented training of equilibrium models.

Every training image gets fresh Gaussian noise at ``sigma`` (in pixel space,
as in certification).  The forward pass solves for the fixed point without
autograd; the backward pass is either the implicit gradient (adjoint fixed
point solved with a registered solver) or the Jacobian-free one, optionally
with a Jacobian penalty that keeps ``f`` contractive (see
:mod:`deqcert.models.grad`).  Runs are seeded: the same config gives the same
model.  At the end the model is evaluated on the test split, clean and under
noise, with the reference solver.

Command line: ``python -m deqcert.train CONFIG.toml [--out PATH] [--quiet]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .config import EvalConfig, SolverSpec, TrainConfig, reference_solver_spec
from .evaluate import evaluate
from .loop import TrainResult, random_shift, train

__all__ = [
    "EvalConfig",
    "SolverSpec",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "main",
    "random_shift",
    "reference_solver_spec",
    "train",
]


def main(argv: list[str] | None = None) -> int:
    """``python -m deqcert.train CONFIG.toml --out model.safetensors``."""
    parser = argparse.ArgumentParser(prog="python -m deqcert.train", description=__doc__)
    parser.add_argument("config", type=Path, help="TOML training config")
    parser.add_argument("--out", type=Path, help="where to write the checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    result = train(TrainConfig.from_file(args.config), out=args.out, progress=not args.quiet)
    for key, value in result.metrics.items():
        print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    if result.checkpoint is not None:
        print(f"checkpoint: {result.checkpoint}")
    return 0
