"""deqcert's fixed-point solvers against TorchDEQ 0.1.0, side by side in one run.

Problems (batch 128, float32, tolerance 1e-5 on the relative residual):

* ``dense``: ``z = tanh(W z + u)``, ``W`` symmetric with spectral radius 0.95;
* ``conv``: ``z = tanh(conv(z) + x)`` on 16x14x14 states, a random 3x3
  convolution scaled to spectral norm 0.97 (power iteration).  Its eigenvalues
  fill a disk well inside the norm, so plain iteration contracts by about 0.55
  a step and no Krylov-type method (Anderson, Broyden) can do much better;
* ``conv-sym``: the same with a self-adjoint kernel (like the symmetric dense
  ``W``), so the spectral radius equals the norm, 0.97: the hard case.

The injections ``u`` and ``x`` are scaled by 0.1 so that tanh stays close to
linear and the maps contract at about their nominal rate.

Stop criterion: both libraries use the per-sample residual
``||f(z) - z|| / (||f(z)|| + 1e-9)`` (TorchDEQ's ``stop_mode="rel"``; deqcert's
``"rel"`` uses the same epsilon).  TorchDEQ stops when the batch maximum is
below ``tol``; deqcert freezes each sample once it is at or below ``tol``.  The
table also reports the largest residual of the returned states, measured by
the benchmark itself, so the accuracy reached can be compared.

NFE counts calls of ``f`` on the batch.  Wall times are medians over repeats;
"outside f" is the wall time minus the time spent inside ``f``.  Run with
``make bench`` (installs ``torchdeq==0.1.0``) or ``python benchmarks/solvers.py
[--quick]``; the table is also written to ``benchmarks/results/solvers.md``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from deqcert import create_solver

try:
    from torchdeq.solver import get_solver as torchdeq_solver
except ImportError:  # pragma: no cover - bench-only dependency
    raise SystemExit("the solver benchmark needs TorchDEQ: pip install torchdeq==0.1.0") from None

Map = Callable[[Tensor], Tensor]
RESULTS = Path(__file__).resolve().parent / "results" / "solvers.md"
TOL = 1e-5
MAX_ITER = 600
INPUT_SCALE = 0.1
"""Injection scale (unit inputs saturate tanh and every solver needs ~20 steps)."""


@dataclass
class Run:
    nfe: int
    seconds: float
    f_seconds: float
    max_residual: float


class TimedMap:
    """Counts the calls of ``f`` and the time spent inside it."""

    def __init__(self, f: Map) -> None:
        self.f = f
        self.calls = 0
        self.seconds = 0.0

    def __call__(self, z: Tensor) -> Tensor:
        start = time.perf_counter()
        out = self.f(z)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


def dense_problem(batch: int, dim: int, gen: torch.Generator) -> Map:
    w = torch.randn(dim, dim, generator=gen)
    w = (w + w.T) / 2
    w = w / torch.linalg.eigvalsh(w).abs().max() * 0.95
    u = INPUT_SCALE * torch.randn(batch, dim, generator=gen)
    return lambda z: torch.tanh(z @ w + u)


def conv_problem(
    batch: int, gen: torch.Generator, *, symmetric: bool = False, channels: int = 16, side: int = 14
) -> Map:
    weight = torch.randn(channels, channels, 3, 3, generator=gen)
    if symmetric:  # self-adjoint: the adjoint of conv2d is conv2d with this flipped kernel
        weight = (weight + weight.transpose(0, 1).flip(2, 3)) / 2
    v = torch.randn(1, channels, side, side, generator=gen)
    for _ in range(200):  # power iteration for the operator norm of the convolution
        v = F.conv_transpose2d(F.conv2d(v, weight, padding=1), weight, padding=1)
        v = v / v.norm()
    norm = F.conv2d(v, weight, padding=1).norm()
    weight = weight / norm * 0.97
    x = INPUT_SCALE * torch.randn(batch, channels, side, side, generator=gen)
    return lambda z: torch.tanh(F.conv2d(z, weight, padding=1) + x)


def max_rel_residual(f: Map, z: Tensor) -> float:
    fz = f(z)
    diff = (fz - z).flatten(1).norm(dim=1)
    return float((diff / (fz.flatten(1).norm(dim=1) + 1e-9)).max())


def run_deqcert(name: str, f: Map, z0: Tensor) -> Tensor:
    solver = create_solver(name, max_iter=MAX_ITER, tol=TOL, stop_mode="rel")
    return solver.solve(f, z0).z


def run_torchdeq(name: str, f: Map, z0: Tensor) -> Tensor:
    key = "fixed_point_iter" if name == "naive" else name
    z, _, _ = torchdeq_solver(key)(f, z0, max_iter=MAX_ITER, tol=TOL, stop_mode="rel")
    return z


def measure(name: str, f: Map, z0: Tensor, repeats: int) -> tuple[Run, Run]:
    """Time deqcert and TorchDEQ on the same problem, alternating runs."""
    runners = (run_deqcert, run_torchdeq)
    times: list[list[float]] = [[], []]
    f_times: list[list[float]] = [[], []]
    calls = [0, 0]
    finals: list[Tensor] = [z0, z0]
    with torch.no_grad():
        for i, runner in enumerate(runners):  # warm-up: allocator, kernels, lazy imports
            finals[i] = runner(name, f, z0)
        for _ in range(repeats):
            for i, runner in enumerate(runners):
                timed = TimedMap(f)
                start = time.perf_counter()
                finals[i] = runner(name, timed, z0)
                times[i].append(time.perf_counter() - start)
                f_times[i].append(timed.seconds)
                calls[i] = timed.calls
        residuals = [max_rel_residual(f, z) for z in finals]
    ours, theirs = (
        Run(calls[i], statistics.median(times[i]), statistics.median(f_times[i]), residuals[i])
        for i in range(2)
    )
    return ours, theirs


def row(problem: str, solver: str, ours: Run, theirs: Run) -> str:
    cells = [
        problem,
        solver,
        str(ours.nfe),
        str(theirs.nfe),
        f"{ours.nfe / theirs.nfe:.2f}",
        f"{ours.seconds:.3f}",
        f"{theirs.seconds:.3f}",
        f"{ours.seconds / theirs.seconds:.2f}",
        f"{ours.seconds - ours.f_seconds:.3f} / {theirs.seconds - theirs.f_seconds:.3f}",
        f"{ours.max_residual:.1e} / {theirs.max_residual:.1e}",
    ]
    return "| " + " | ".join(cells) + " |"


def targets(runs: dict[tuple[str, str], tuple[Run, Run]]) -> list[str]:
    """The issue's targets, checked on this run's numbers."""
    out = []
    for (problem, solver), (ours, theirs) in runs.items():
        if solver == "naive":
            continue
        naive = runs[(problem, "naive")][0]
        checks = [
            f"NFE <= TorchDEQ: {'yes' if ours.nfe <= theirs.nfe else 'NO'}",
            f"time <= TorchDEQ: {'yes' if ours.seconds <= theirs.seconds else 'NO'}",
        ]
        if solver == "anderson":
            better = "yes" if ours.nfe < naive.nfe else "NO"
            checks.append(f"NFE < plain iteration ({naive.nfe}): {better}")
        out.append(f"- {problem} / {solver}: " + "; ".join(checks))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 32, one repeat, no file")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", type=Path, default=None, help=f"default: {RESULTS}")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch = 32 if args.quick else 128
    repeats = 1 if args.quick else args.repeats
    out = args.out if args.out is not None or args.quick else RESULTS
    gen = torch.Generator().manual_seed(0)
    state = torch.zeros(batch, 16, 14, 14)
    problems = {
        "dense": (dense_problem(batch, 256, gen), torch.zeros(batch, 256)),
        "conv": (conv_problem(batch, gen), state),
        "conv-sym": (conv_problem(batch, gen, symmetric=True), state),
    }
    setup = (
        f"batch {batch}, float32, tol {TOL:g} (relative residual), max_iter {MAX_ITER}, "
        f"{torch.get_num_threads()} thread(s), median of {repeats} run(s), "
        f"torch {torch.__version__}"
    )
    header = [
        "| problem | solver | NFE deqcert | NFE TorchDEQ | NFE ratio | time deqcert (s) "
        "| time TorchDEQ (s) | time ratio | outside f deqcert / TorchDEQ (s) "
        "| max residual deqcert / TorchDEQ |",
        "|" + "---|" * 10,
    ]
    print(setup, *header, sep="\n", flush=True)
    runs: dict[tuple[str, str], tuple[Run, Run]] = {}
    lines = list(header)
    for pname, (f, z0) in problems.items():
        for sname in ("naive", "anderson", "broyden"):
            runs[(pname, sname)] = measure(sname, f, z0, repeats)
            lines.append(row(pname, sname, *runs[(pname, sname)]))
            print(lines[-1], flush=True)
    summary = targets(runs)
    print("", *summary, sep="\n")
    if out is not None:
        title = "# Solver benchmark: deqcert vs TorchDEQ 0.1.0"
        text = "\n".join([title, "", setup, "", *lines, "", "Targets:", "", *summary, ""])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
