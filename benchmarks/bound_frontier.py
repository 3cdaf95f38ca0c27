"""The radius trade-off between trusting the chains and trusting the reference votes.

Two cells of ``bound_grid.py``'s model have the same serial A-rate, 0.95, so
their ``n0`` selection votes have the same distribution:

* ``X``: ``p_A = 1.0`` with chain errors at rate 0.05, where Clopper-Pearson on
  the reference votes alone (``ref``) is the better bound;
* ``Y``: ``p_A = 0.95`` with perfect chains, where ``sound-v1`` is.

A rule that sees only the selection votes therefore picks the same mixture of
branches in both cells.  For the union-bound branches ``max(CP(t, K, beta
alpha), sound(w (1 - beta) alpha, (1 - w) (1 - beta) alpha) + e)`` (``beta = 0``:
the mismatch bound alone; ``beta = 1``: ``ref``) the script prints each
branch's mean radius in ``X`` as a share ``a`` of ``ref``'s and in ``Y`` as a
share ``b`` of ``sound-v1``'s.  A mixture keeps both shares at 0.995 or more
only if ``E[a] + E[b] >= 1.99``, so only if some branch has ``a + b >= 1.99``:
the last line says whether one does.

    python benchmarks/bound_frontier.py                 # n 10000, K 400, alpha 0.001, 300 runs
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
from bound_grid import Counts, parse_settings, radius, simulate

from deqcert.certify import bounds

BETAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99, 1.0)
INNER = (0.3, 0.4, 0.5, 0.6, 0.7)
X_CELL = (1.0, 0.05)
Y_CELL = (0.95, 0.0)


def union_lower(c: Counts, n: int, K: int, alpha: float, beta: float, w: float) -> float:
    """``p_lower`` of the union-bound branch with reference share ``beta`` and inner split ``w``.

    ``beta`` in (0, 1) with ``w = 0.5`` is :func:`bounds.branch_lower`'s
    ``hybrid-<beta>``; ``beta = 0`` is the mismatch bound with ``+e`` at the full
    ``alpha``, ``beta = 1`` is Clopper-Pearson on the reference votes.
    """
    p = bounds.clopper_pearson_lower(c.t, K, beta * alpha) if beta > 0 else 0.0
    if beta < 1:
        rest = (1 - beta) * alpha
        mismatch = bounds.sound_serialized_lower(c.c_m, c.d, n, K, w * rest, (1 - w) * rest, c.e)
        p = max(p, mismatch.p_lower)
    return p


def mean_radius(cells: list[Counts], lower: Callable[[Counts], float]) -> float:
    return float(np.mean([radius(lower(c)) for c in cells]))


def main(argv: list[str] | None = None) -> None:
    a = parse_settings(__doc__, argv)
    rng = np.random.default_rng(a.seed)
    x = [simulate(*X_CELL, a.n, a.K, a.n0, rng) for _ in range(a.runs)]
    y = [simulate(*Y_CELL, a.n, a.K, a.n0, rng) for _ in range(a.runs)]
    ref_x = mean_radius(x, lambda c: bounds.clopper_pearson_lower(c.t, a.K, a.alpha))
    half = a.alpha / 2
    v1_y = mean_radius(
        y, lambda c: bounds.sound_serialized_lower(c.c_m, c.d, a.n, a.K, half, half).p_lower
    )
    print(
        f"n={a.n} K={a.K} n0={a.n0} alpha={a.alpha} runs={a.runs}; "
        "serial A-rate 0.95 in both cells\n"
        f"X (p_A {X_CELL[0]}, chain errors {X_CELL[1]}): ref r/sigma {ref_x:.4f}\n"
        f"Y (p_A {Y_CELL[0]}, chain errors {Y_CELL[1]}): sound-v1 r/sigma {v1_y:.4f}\n"
        "shortfall in %: X against ref, Y against sound-v1 (positive: the branch is lower)"
    )
    cols = ("X r/sigma", "X short", "Y r/sigma", "Y short")
    print(f"{'beta':>5} {'w':>4} " + " ".join(f"{c:>10}" for c in cols) + f" {'a+b':>7}")
    best = (0.0, 0.0, 0.0)
    for beta in BETAS:
        for w in INNER if 0 < beta < 1 else (0.5,):
            branch = partial(union_lower, n=a.n, K=a.K, alpha=a.alpha, beta=beta, w=w)
            r_x, r_y = mean_radius(x, branch), mean_radius(y, branch)
            share = r_x / ref_x + r_y / v1_y
            best = max(best, (share, beta, w))
            print(
                f"{beta:>5} {w:>4} {r_x:>10.4f} {100 * (1 - r_x / ref_x):>+10.2f} "
                f"{r_y:>10.4f} {100 * (1 - r_y / v1_y):>+10.2f} {share:>7.4f}"
            )
    verdict = "reachable" if best[0] >= 1.99 else "not reachable by any mixture of these branches"
    print(f"largest a+b: {best[0]:.4f} (beta {best[1]}, w {best[2]}); 0.5 % in both: {verdict}")


if __name__ == "__main__":
    main()
