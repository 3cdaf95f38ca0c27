"""What a run of the benchmark depends on, and the command line that picks it."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from common import default_workers

from deqcert.checkpoint import bundled_sigmas

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
PLOT = ROOT / "docs" / "img" / "srs_vs_vanilla.png"
K_DEFAULT = 400
K_ABLATION = (100, 400, 1000, 2500)


@dataclass
class Config:
    """Everything a run depends on (written next to its tables)."""

    sigma: float
    n: int = 10_000
    n0: int = 100
    alpha: float = 0.001
    batch: int = 400
    inputs: int = 200
    matrix_inputs: int = 50
    ablation_inputs: int = 50
    baseline_inputs: int = 20
    k: int = K_DEFAULT
    ablation: tuple[int, ...] = K_ABLATION
    seed: int = 0
    threads: int = 1
    workers: int = 2
    compact: bool = True
    all_one_step: bool = False
    carry: bool = False
    allocator: bool = True
    quick: bool = False
    checkpoint: str = ""
    machine: str = ""
    """The software and hardware of the run (``""`` in records written before it was kept)."""


QUICK = {"n": 2000, "inputs": 6, "matrix_inputs": 3, "ablation_inputs": 3, "baseline_inputs": 3}
FULL = {
    "n": 10_000,
    "inputs": 200,
    "matrix_inputs": 50,
    "ablation_inputs": 30,
    "baseline_inputs": 10,
}
SECONDARY = {"inputs": 30, "matrix_inputs": 10, "ablation_inputs": 10, "baseline_inputs": 5}
"""Full-run counts for every sigma after the first, so that ``make bench`` fits in an hour."""


def parse(argv: Iterable[str] | None = None, description: str = "") -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="n=2000, 6 inputs: same tables, < 3 min")
    p.add_argument("--sigmas", type=float, nargs="*", help="default: every bundled checkpoint")
    p.add_argument("--n", type=int)
    p.add_argument("--n0", type=int, default=100)
    p.add_argument("--alpha", type=float, default=0.001)
    p.add_argument("--batch", type=int, default=400)
    counts = "one value, or one per sigma"
    p.add_argument("--inputs", type=int, nargs="+", help=f"headline inputs ({counts})")
    p.add_argument("--matrix-inputs", type=int, nargs="+", help=f"full matrix ({counts})")
    p.add_argument("--ablation-inputs", type=int, nargs="+", help=f"K ablation ({counts})")
    p.add_argument(
        "--baseline-inputs",
        type=int,
        nargs="+",
        help=f"consistency runs: vanilla 30A uncompacted, SRS 1N ({counts})",
    )
    p.add_argument("--k", type=int, default=K_DEFAULT, help="reference samples at n=10,000")
    p.add_argument(
        "--ablation", type=int, nargs="+", default=list(K_ABLATION), help="K values at n=10,000"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument(
        "--workers",
        type=int,
        default=default_workers(),
        help="processes sharing the inputs (default: 2, or 1 on a 1-CPU machine)",
    )
    p.add_argument("--no-compact", action="store_true", help="reference solves without compaction")
    p.add_argument("--no-allocator", action="store_true", help="leave glibc malloc as it is")
    p.add_argument("--all-one-step", action="store_true", help="run 1N on every input too")
    p.add_argument("--carry", action="store_true", help="add the 'carry' chain start")
    p.add_argument("--out", type=Path, help="markdown output (default benchmarks/results/...)")
    p.add_argument("--plot", type=Path, help=f"PNG output (default {PLOT.relative_to(ROOT)})")
    p.add_argument("--render", action="store_true", help="rebuild outputs from saved records")
    p.add_argument(
        "--untrained", action="store_true", help="debug the script on an untrained mdeq (small)"
    )
    p.add_argument("--checkpoint", type=Path, help="a checkpoint instead of the bundled one")
    args = p.parse_args(argv)
    for name in ("workers", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    return args


def configs(args: argparse.Namespace) -> list[Config]:
    """One configuration per sigma (default: every bundled checkpoint)."""
    sigmas = args.sigmas or ([0.25] if args.untrained or args.checkpoint else bundled_sigmas())
    if not sigmas:
        raise SystemExit("no bundled checkpoint found (deqcert/checkpoints/*.safetensors)")
    out = []
    for position, sigma in enumerate(sigmas):
        base = dict(QUICK if args.quick else FULL)
        if position and not args.quick:
            base.update(SECONDARY)
        for key in ("inputs", "matrix_inputs", "ablation_inputs", "baseline_inputs"):
            given = getattr(args, key)
            if given:
                base[key] = given[min(position, len(given) - 1)]
        cfg = Config(
            sigma=sigma,
            n=args.n or base["n"],
            n0=args.n0,
            alpha=args.alpha,
            batch=args.batch,
            inputs=base["inputs"],
            k=args.k,
            ablation=tuple(args.ablation),
            seed=args.seed,
            threads=args.threads,
            workers=args.workers,
            compact=not args.no_compact,
            all_one_step=args.all_one_step,
            carry=args.carry,
            allocator=not args.no_allocator,
            quick=args.quick,
        )
        cfg.matrix_inputs = min(cfg.inputs, base["matrix_inputs"])
        cfg.ablation_inputs = min(cfg.inputs, base["ablation_inputs"])
        cfg.baseline_inputs = min(cfg.matrix_inputs, base["baseline_inputs"])
        out.append(cfg)
    return out
