"""Retrain the bundled checkpoints from their configs.

For every ``configs/mdeq-small-sigma*.toml`` (or the configs named on the
command line) this runs deqcert's own training and writes
``deqcert/checkpoints/<config name>.safetensors``; the same as::

    deqcert train --config configs/mdeq-small-sigma0.25.toml \\
        --out deqcert/checkpoints/mdeq-small-sigma0.25.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path

from deqcert.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", type=Path, help="TOML configs (default: all)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "deqcert" / "checkpoints")
    args = parser.parse_args()
    configs = args.configs or sorted((ROOT / "configs").glob("mdeq-small-sigma*.toml"))
    for path in configs:
        result = train(TrainConfig.from_file(path), out=args.out_dir / f"{path.stem}.safetensors")
        summary = ", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items())
        print(f"{path.name} -> {result.checkpoint}: {summary}")


if __name__ == "__main__":
    main()
