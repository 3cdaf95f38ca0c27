"""The serialized bounds on simulated counts: a grid of true p_A and chain error rate.

For every cell the script simulates ``--runs`` certificates' counts exactly as
the serialized certifier forms them, and prints the mean ``p_lower`` and the
mean ``radius / sigma`` (Gaussian; abstentions count 0) of

* ``v1``: the bound ``sound`` was before issue 16 (``sound-v1``: alpha/2, alpha/2, no ``e``);
* ``ref``: Clopper-Pearson on the ``K`` reference votes alone, at alpha;
* ``hyb25``: the union-bound hybrid ``max(CP(t, K, alpha/4), sound(3 alpha/8,
  3 alpha/8) + e)`` (``hybrid-0.25``) on its own;
* ``sel3``: the selection-stage rule among ``sound-0.5``, ``sound-0.9`` and
  ``reference`` (each with ``+e``, at the full alpha);
* ``sound``: the default bound, the selection-stage rule between
  ``hybrid-0.4`` and ``reference`` (:data:`deqcert.certify.bounds.BRANCHES`);

and the worst shortfall of each candidate against ``v1`` and ``ref`` over the grid.

Counts model (binary, class A the true top class): ``Y_g`` i.i.d.
Bernoulli(p_A); a chain error flips the serial vote, ``Y_m != Y_g``, with
probability ``eps`` independently (``eps = "A"``: the chains always say A, so
they are wrong exactly where the reference is not A).  Selection: ``n0``
serial votes.  ``S``: a uniformly random ``K`` of the ``n`` samples.  The
bounds do not depend on how dependent the chain votes are, only on these counts.

    python benchmarks/bound_grid.py                 # n 10000, K 400, alpha 0.001, 300 runs
    python benchmarks/bound_grid.py --runs 50
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from deqcert.certify import bounds

P_A = (0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 1.0)
EPS: tuple[float | str, ...] = (0.0, 0.001, 0.01, 0.05, "A")


@dataclass(frozen=True)
class Counts:
    c_m: int
    d: int
    e: int
    t: int
    selection_a: int


def simulate(
    p_a: float, eps: float | str, n: int, K: int, n0: int, rng: np.random.Generator
) -> Counts:
    """One certificate's counts in the model of the module docstring."""
    g = rng.random(n) < p_a
    m = np.ones(n, bool) if eps == "A" else g ^ (rng.random(n) < float(eps))
    p_serial = 1.0 if eps == "A" else p_a * (1 - float(eps)) + (1 - p_a) * float(eps)
    s = rng.choice(n, size=K, replace=False)
    return Counts(
        c_m=int(m.sum()),
        d=int((m[s] & ~g[s]).sum()),
        e=int((~m[s] & g[s]).sum()),
        t=int(g[s].sum()),
        selection_a=int(rng.binomial(n0, p_serial)),
    )


ISSUE_RULE = ("sound-0.5", "sound-0.9", "reference")
"""The selection-stage rule as issue 16 proposed it (measured here, not the default)."""

COLUMNS = ("v1", "ref", "hyb25", "sel3", "sound")
CANDIDATES = ("hyb25", "sel3", "sound")


def evaluate(c: Counts, n: int, K: int, n0: int, alpha: float) -> dict[str, float]:
    """``p_lower`` of every compared bound on one certificate's counts."""

    def rule(branches: tuple[str, ...]) -> float:
        branch = bounds.select_branch(c.selection_a, n0, n, K, alpha, branches)
        return bounds.branch_lower(branch, c.c_m, c.d, c.e, c.t, n, K, alpha).p_lower

    return {
        "v1": bounds.sound_serialized_lower(c.c_m, c.d, n, K, alpha / 2, alpha / 2).p_lower,
        "ref": bounds.clopper_pearson_lower(c.t, K, alpha),
        "hyb25": bounds.branch_lower("hybrid-0.25", c.c_m, c.d, c.e, c.t, n, K, alpha).p_lower,
        "sel3": rule(ISSUE_RULE),
        "sound": rule(bounds.BRANCHES),
    }


def radius(p: float) -> float:
    return float(norm.ppf(p)) if p > 0.5 else 0.0


def shortfall(new: float, old: float) -> float:
    """``1 - new / old`` in percent (positive: ``new`` is lower)."""
    return 100 * (1 - new / old) if old > 0 else 0.0


def parse_settings(doc: str | None, argv: list[str] | None) -> argparse.Namespace:
    """``--n --K --n0 --alpha --runs --seed`` of a count simulation (grid, frontier)."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--K", type=int, default=400)
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    a = parse_settings(__doc__, argv)
    all_a = bounds.serialized_bound(
        "sound",
        {
            "C_m": a.n,
            "d": 0,
            "K": a.K,
            "N1": a.K,
            "reference_A": a.K,
            "selection_A": a.n0,
            "selection_n": a.n0,
        },
        a.n,
        a.alpha,
    )
    print(
        f"n={a.n} K={a.K} n0={a.n0} alpha={a.alpha} runs={a.runs} "
        f"sound = select({' | '.join(bounds.BRANCHES)})"
    )
    print(
        f"all votes A, d=0: sound p_lower {all_a.p_lower:.5f} "
        f"(r/sigma {radius(all_a.p_lower):.3f}, branch {all_a.details['branch']})"
    )
    print(
        "cells: mean p_lower / mean r/sigma; last columns: shortfall of sound in % "
        "(p_lower / radius; positive: sound is lower)"
    )
    head = " ".join(f"{k:>13}" for k in COLUMNS)
    print(f"{'p_A':>6} {'eps':>5} {head} {'vs v1':>13} {'vs ref':>13}")
    worst = {(c, o, q): 0.0 for c in CANDIDATES for o in ("v1", "ref") for q in "pr"}
    for p_a in P_A:
        for eps in EPS:
            rng = np.random.default_rng([a.seed, int(p_a * 1e4), EPS.index(eps)])
            rows = [
                evaluate(simulate(p_a, eps, a.n, a.K, a.n0, rng), a.n, a.K, a.n0, a.alpha)
                for _ in range(a.runs)
            ]
            p = {k: float(np.mean([r[k] for r in rows])) for k in COLUMNS}
            r = {k: float(np.mean([radius(x[k]) for x in rows])) for k in COLUMNS}
            for c in CANDIDATES:
                for o in ("v1", "ref"):
                    worst[c, o, "p"] = max(worst[c, o, "p"], shortfall(p[c], p[o]))
                    worst[c, o, "r"] = max(worst[c, o, "r"], shortfall(r[c], r[o]))
            cells = " ".join(f"{p[k]:.4f}/{r[k]:.3f}".rjust(13) for k in COLUMNS)
            vs = " ".join(
                f"{shortfall(p['sound'], p[o]):+.2f}/{shortfall(r['sound'], r[o]):+.1f}".rjust(13)
                for o in ("v1", "ref")
            )
            print(f"{p_a:>6} {eps!s:>5} {cells} {vs}")
    print("worst shortfall over the grid, % (p_lower / radius):")
    for c in CANDIDATES:
        print(
            f"  {c:>5}: vs v1 {worst[c, 'v1', 'p']:.2f} / {worst[c, 'v1', 'r']:.2f}, "
            f"vs ref {worst[c, 'ref', 'p']:.2f} / {worst[c, 'ref', 'r']:.2f}"
        )


if __name__ == "__main__":
    main()
