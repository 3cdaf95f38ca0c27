"""Where the seconds of one certificate go: SRS (and vanilla) broken down by component.

The model, the solvers and the noise sampler are wrapped in timers, and the
certifier runs as usual; the wrappers only add a clock read around each call:

* ``noise``: drawing the Gaussian noise;
* ``inject``: the input injection ``u = inject(x + e)`` of every noisy sample;
* ``<phase> f``: evaluations of the equilibrium map, by phase (``chains``,
  ``warmup``, ``anchor``, ``reference``);
* ``<phase> solver``: the rest of the solve (residuals, Anderson's least
  squares, freezing, compaction), by phase;
* ``<phase> readout``: logits of the final states, by phase;
* ``other``: everything else (Python, batching, counting, the bound).

Run ``python benchmarks/profile_serialized.py [--n 10000] [--inputs 3]
[--chain-start anchor] [--no-compact] [--cprofile]`` (default: the bundled
sigma 0.25 checkpoint; ``--untrained`` for an untrained ``mdeq`` small).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from deqcert import create_certifier, create_dataset, create_noise, create_solver
from deqcert.models.base import solve_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import certify_one, load_model, machine, markdown_table, tune_allocator  # noqa: E402


class Clock:
    """Accumulated seconds per label, and the phase the next model calls belong to."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.phase = "chains"

    def timed(self, label: str, fn: Any, *args: Any) -> Any:
        start = time.perf_counter()
        out = fn(*args)
        self.seconds[label] += time.perf_counter() - start
        return out


class TimedModel(torch.nn.Module):
    """Delegates the EquilibriumModel protocol to ``inner``, timing every call."""

    def __init__(self, inner: Any, clock: Clock) -> None:
        super().__init__()
        self.inner = inner
        self.clock = clock
        self.num_classes = inner.num_classes
        self.input_shape = inner.input_shape

    def inject(self, x: Tensor) -> Tensor:
        return self.clock.timed("inject", self.inner.inject, x)  # type: ignore[no-any-return]

    def init_state(self, u: Tensor) -> Tensor:
        return self.inner.init_state(u)  # type: ignore[no-any-return]

    def f(self, z: Tensor, u: Tensor) -> Tensor:
        return self.clock.timed(f"{self.clock.phase} f", self.inner.f, z, u)  # type: ignore[no-any-return]

    def readout(self, z: Tensor) -> Tensor:
        label = f"{self.clock.phase} readout"
        return self.clock.timed(label, self.inner.readout, z)  # type: ignore[no-any-return]

    def forward(self, x: Tensor, solver: Any = None, z0: Tensor | None = None) -> Tensor:
        """The protocol's ``forward`` (certifiers do not call it): with a solver, through the
        timed members; without one, ``inner``'s own forward, untimed."""
        if solver is None:
            return self.inner(x)  # type: ignore[no-any-return]
        return solve_model(self, x, solver, z0)[0]


class TimedSolver:
    """A solver that marks its phase (for the model's timers) and times its whole solve."""

    def __init__(self, inner: Any, phase: str, clock: Clock) -> None:
        self.inner, self.phase, self.clock = inner, phase, clock

    def solve(self, f: Any, z0: Tensor) -> Any:
        phase = "anchor" if self.phase == "reference" and z0.shape[0] == 1 else self.phase
        self.clock.phase = phase
        return self.clock.timed(f"{phase} solve", self.inner.solve, f, z0)

    def describe(self) -> dict[str, Any]:
        return dict(self.inner.describe())


class TimedNoise:
    """A noise sampler whose ``sample`` is timed."""

    def __init__(self, inner: Any, clock: Clock) -> None:
        self.inner, self.clock = inner, clock
        self.norm = inner.norm

    def sample(self, shape: Any, **kw: Any) -> Tensor:
        return self.clock.timed("noise", lambda: self.inner.sample(shape, **kw))  # type: ignore[no-any-return]

    def radius(self, p_lower: float) -> float:
        return float(self.inner.radius(p_lower))

    def describe(self) -> dict[str, Any]:
        return dict(self.inner.describe())


def breakdown(clock: Clock, total: float) -> list[tuple[str, float]]:
    """``(component, seconds)`` with solve times split into f and solver overhead."""
    s = dict(clock.seconds)
    rows = [("noise", s.pop("noise", 0.0)), ("inject", s.pop("inject", 0.0))]
    for phase in ("chains", "warmup", "anchor", "reference"):
        solve = s.pop(f"{phase} solve", 0.0)
        f = s.pop(f"{phase} f", 0.0)
        readout = s.pop(f"{phase} readout", 0.0)
        if solve or readout:
            rows += [
                (f"{phase} f", f),
                (f"{phase} solver", solve - f),
                (f"{phase} readout", readout),
            ]
    accounted = sum(v for _, v in rows)
    rows.append(("other (Python, batching, bound)", total - accounted))
    return rows


def profile(args: argparse.Namespace, model: Any, dataset: Any) -> None:
    clock = Clock()
    timed_model = TimedModel(model, clock).eval()
    noise = TimedNoise(create_noise("gaussian", sigma=args.sigma), clock)
    reference = create_solver("anderson", max_iter=30, tol=1e-3, compact=not args.no_compact)
    common = {"noise": noise, "n0": args.n0, "n": args.n, "alpha": 0.001, "batch_size": args.batch}
    if args.certifier == "vanilla":
        certifier = create_certifier(
            "vanilla", **common, solver=TimedSolver(reference, "reference", clock)
        )
    else:
        certifier = create_certifier(
            "serialized",
            **common,
            solver=TimedSolver(create_solver(args.solver, max_iter=args.steps), "chains", clock),
            warmup_solver=TimedSolver(create_solver("anderson", max_iter=10), "warmup", clock),
            reference_solver=TimedSolver(reference, "reference", clock),
            reference_samples=args.k,
            chain_start=args.chain_start,
        )
    x_warm = dataset[len(dataset) - 1][0]
    certifier.certify(timed_model, x_warm, generator=torch.Generator().manual_seed(0))
    clock.seconds.clear()
    profiler = cProfile.Profile() if args.cprofile else None
    total = 0.0
    nfe = 0
    for i in range(args.inputs):
        if profiler:
            profiler.enable()
        start = time.perf_counter()
        record = certify_one(certifier, timed_model, dataset, i, seed=0)
        total += time.perf_counter() - start
        if profiler:
            profiler.disable()
        nfe += record["nfe"]
    rows = breakdown(clock, total)
    per = args.inputs
    table = markdown_table(
        ["component", "s/input", "share (%)"],
        [[name, f"{sec / per:.3f}", f"{100 * sec / total:.1f}"] for name, sec in rows]
        + [["total", f"{total / per:.3f}", "100.0"]],
    )
    title = (
        f"{args.certifier}"
        + (
            f" {args.steps}{args.solver[0].upper()} {args.chain_start}, K = {args.k}"
            if args.certifier == "serialized"
            else " 30A"
        )
        + f": n = {args.n:,}, n0 = {args.n0}, batch {args.batch}, {args.inputs} input(s), "
        f"compaction {'off' if args.no_compact else 'on'}, NFE/input {nfe / per:,.0f}"
    )
    print(f"{title}\n{machine()}\n\n{table}\n")
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--certifier", choices=["serialized", "vanilla"], default="serialized")
    p.add_argument("--sigma", type=float, default=0.25)
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--n0", type=int, default=100)
    p.add_argument("--batch", type=int, default=400)
    p.add_argument("--k", type=int, default=400)
    p.add_argument("--solver", choices=["naive", "anderson", "broyden"], default="anderson")
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--chain-start", choices=["warmup", "anchor", "carry"], default="anchor")
    p.add_argument("--inputs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-compact", action="store_true")
    p.add_argument("--no-allocator", action="store_true")
    p.add_argument("--cprofile", action="store_true", help="also print cProfile's top functions")
    p.add_argument("--untrained", action="store_true")
    p.add_argument("--checkpoint", type=Path, help="a checkpoint instead of the bundled one")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.no_allocator:
        tune_allocator()
    model = load_model(args.sigma, args.untrained, args.checkpoint)
    profile(args, model, create_dataset("mnist-sample", split="test"))


if __name__ == "__main__":
    main()
