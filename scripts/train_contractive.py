"""Train the bundled contractive DEQ checkpoints from their configs.

For every ``configs/contractive-*.toml`` (or the configs named on the command
line) this runs deqcert's own training (:func:`deqcert.train.train`) and writes
``deqcert/checkpoints/<config name>.safetensors``.  Until the contractive
models are registered through ``pyproject.toml`` entry points, they are
registered here at run time, so the script works either way.

Run: ``python scripts/train_contractive.py [CONFIG.toml ...] [--threads 1]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from deqcert import registry
from deqcert.models.contractive import ContractiveConvDEQ, ContractiveMLPDEQ
from deqcert.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"contractive-mlpdeq": ContractiveMLPDEQ, "contractive-convdeq": ContractiveConvDEQ}


def register_models() -> None:
    """Register the contractive models unless an entry point already does."""
    for name, cls in MODELS.items():
        if name not in registry.models:
            registry.models.register(name, cls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", type=Path, help="TOML configs (default: all)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "deqcert" / "checkpoints")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    register_models()
    configs = args.configs or sorted((ROOT / "configs").glob("contractive-*.toml"))
    for path in configs:
        out = args.out_dir / f"{path.stem}.safetensors"
        result = train(TrainConfig.from_file(path), out=out, progress=False)
        summary = ", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items())
        print(f"{path.name} -> {result.checkpoint}: {summary}", flush=True)


if __name__ == "__main__":
    main()
