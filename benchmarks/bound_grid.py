"""The serialized bounds on simulated counts: a grid of true p_A and chain error rate.

For every cell the script simulates ``--runs`` certificates' counts exactly as
the serialized certifier forms them, and prints the mean ``p_lower`` and the
mean ``radius / sigma`` (Gaussian; abstentions count 0) of

* ``v1``: the bound ``sound`` was before issue 16 (``sound-v1``: alpha/2, alpha/2, no ``e``);
* ``ref``: Clopper-Pearson on the ``K`` reference votes alone, at alpha;
* ``hybrid``: ``max(CP(t, K, alpha/4), sound(3 alpha/8, 3 alpha/8) + e)``;
* ``sound``: the default bound (a branch chosen from the selection votes);

and the worst shortfall of ``sound`` against ``v1`` and ``ref`` over the grid.

Counts model (binary, class A the true top class): ``Y_g`` i.i.d.
Bernoulli(p_A); a chain error flips the serial vote, ``Y_m != Y_g``, with
probability ``eps`` independently (``eps = "A"``: the chains always say A, so
they are wrong exactly where the reference is not A).  Selection: ``n0``
serial votes.  ``S``: a uniformly random ``K`` of the ``n`` samples.  The
bounds do not depend on how dependent the chain votes are, only on these counts.

    python benchmarks/bound_grid.py                 # n 10000, K 400, alpha 0.001, 300 runs
    python benchmarks/bound_grid.py --runs 50 --rule sound-0.5 hybrid reference
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


def evaluate(
    c: Counts, n: int, K: int, n0: int, alpha: float, rule: tuple[str, ...], hybrid: str
) -> dict:
    """``p_lower`` of every compared bound on one certificate's counts."""
    v1 = bounds.sound_serialized_lower(c.c_m, c.d, n, K, alpha / 2, alpha / 2).p_lower
    branch = bounds.select_branch(c.selection_a, n0, n, K, alpha, rule)
    return {
        "v1": v1,
        "ref": bounds.clopper_pearson_lower(c.t, K, alpha),
        "hybrid": bounds.branch_lower(hybrid, c.c_m, c.d, c.e, c.t, n, K, alpha).p_lower,
        "sound": bounds.branch_lower(branch, c.c_m, c.d, c.e, c.t, n, K, alpha).p_lower,
    }


def radius(p: float) -> float:
    return float(norm.ppf(p)) if p > 0.5 else 0.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--K", type=int, default=400)
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rule", nargs="+", default=list(bounds.BRANCHES))
    parser.add_argument("--hybrid", default="hybrid-0.25", help="the hybrid column's branch")
    a = parser.parse_args(argv)
    rule = tuple(a.rule)
    names = ("v1", "ref", "hybrid", "sound")
    all_a = bounds.serialized_bound(
        "sound",
        {"C_m": a.n, "d": 0, "K": a.K, "N1": a.K, "reference_A": a.K,
         "selection_A": a.n0, "selection_n": a.n0},
        a.n, a.alpha,
    )
    print(f"n={a.n} K={a.K} n0={a.n0} alpha={a.alpha} runs={a.runs} rule={' '.join(rule)}")
    print(f"all votes A, d=0: sound p_lower {all_a.p_lower:.5f} "
          f"(r/sigma {radius(all_a.p_lower):.3f}, branch {all_a.details['branch']})")
    print("mean p_lower / mean r/sigma; shortfall = 1 - sound / other (positive: sound is lower)")
    head = " ".join(f"{k:>15}" for k in names)
    print(f"{'p_A':>6} {'eps':>6} {head}   {'vs v1 p/r':>13}   {'vs ref p/r':>13}")
    worst = {"v1": [0.0, 0.0], "ref": [0.0, 0.0]}
    for p_a in P_A:
        for eps in EPS:
            rng = np.random.default_rng([a.seed, int(p_a * 1e4), EPS.index(eps)])
            rows = [
                evaluate(simulate(p_a, eps, a.n, a.K, a.n0, rng), a.n, a.K, a.n0, a.alpha, rule, a.hybrid)
                for _ in range(a.runs)
            ]
            p = {k: float(np.mean([r[k] for r in rows])) for k in names}
            r = {k: float(np.mean([radius(x[k]) for x in rows])) for k in names}
            cells = " ".join(f"{p[k]:.4f}/{r[k]:.3f}".rjust(15) for k in names)
            short = {}
            for other in ("v1", "ref"):
                sp = 1 - p["sound"] / p[other] if p[other] > 0 else 0.0
                sr = 1 - r["sound"] / r[other] if r[other] > 0 else 0.0
                worst[other] = [max(worst[other][0], sp), max(worst[other][1], sr)]
                short[other] = f"{100 * sp:+.2f}/{100 * sr:+.2f}%"
            print(f"{p_a:>6} {eps!s:>6} {cells}   {short['v1']:>13}   {short['ref']:>13}")
    for other in ("v1", "ref"):
        print(f"worst shortfall vs {other}: p_lower {100 * worst[other][0]:.2f} %, "
              f"radius {100 * worst[other][1]:.2f} %")


if __name__ == "__main__":
    main()
