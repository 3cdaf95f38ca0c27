"""All the statistics of certification, one small named function each.

The formulas and the reasons they are (or are not) valid are in
``docs/concepts.md``; this module only computes them, with ``scipy.stats``.

* :func:`clopper_pearson_lower` / :func:`clopper_pearson_upper`: exact one-sided
  binomial confidence bounds (fractional counts allowed for the ``paper``
  bound, through the Beta quantile).
* :func:`hypergeometric_upper`: exact upper confidence bound on the number of
  "bad" items in a finite population from a simple random sample.
* :func:`binomial_test_pvalue`: the two-sided test of PREDICT.
* :func:`sound_serialized_lower` (with the ``+e`` term), :func:`paper_lower`,
  :func:`repro_lower`: the serialized bounds' formulas;
* :func:`branch_lower` and :func:`select_branch`: the branches of the default
  ``sound`` bound and the rule that picks one from the selection votes;
* :func:`serialized_bound`: every named bound from a certificate's counts.
"""

from __future__ import annotations

from functools import cache
from typing import NamedTuple

from scipy.stats import beta, binomtest, hypergeom


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def _check_count(k: float, n: float) -> None:
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"counts must satisfy 0 <= k <= n, got k={k}, n={n}")


def clopper_pearson_lower(k: float, n: float, alpha: float) -> float:
    """One-sided ``(1 - alpha)`` lower bound on a binomial proportion from ``k`` of ``n``.

    The ``alpha``-quantile of ``Beta(k, n - k + 1)``; 0 when ``k = 0``.
    ``k`` and ``n`` may be fractional (the ``paper`` bound feeds scaled counts).
    """
    _check_alpha(alpha)
    _check_count(k, n)
    if k <= 0:
        return 0.0
    return float(beta.ppf(alpha, k, n - k + 1))


def clopper_pearson_upper(k: float, n: float, alpha: float) -> float:
    """One-sided ``(1 - alpha)`` upper bound on a binomial proportion from ``k`` of ``n``.

    The ``(1 - alpha)``-quantile of ``Beta(k + 1, n - k)``; 1 when ``k = n``.
    """
    _check_alpha(alpha)
    _check_count(k, n)
    if k >= n:
        return 1.0
    return float(beta.ppf(1.0 - alpha, k + 1, n - k))


def hypergeometric_upper(d: int, n: int, K: int, alpha: float) -> int:
    """Largest ``D`` with ``P(Hypergeom(n, D, K) <= d) >= alpha``.

    A population of ``n`` items holds ``D`` marked ones; a uniformly random
    subset of ``K`` items contains ``d`` of them.  The returned ``D_up``
    satisfies ``P(D_up < D) <= alpha`` for every ``D``, whatever produced the
    population.  Exact: the CDF falls as ``D`` grows, so a bisection over the
    feasible range ``[d, n - K + d]`` finds the boundary in ``O(log n)`` CDF
    evaluations.
    """
    _check_alpha(alpha)
    if not (0 <= d <= K <= n):
        raise ValueError(f"need 0 <= d <= K <= n, got d={d}, K={K}, n={n}")
    lo, hi = d, n - K + d  # cdf(lo) = 1 >= alpha; D > hi is impossible given d
    if hypergeom.cdf(d, n, hi, K) >= alpha:
        return hi
    while hi - lo > 1:  # invariant: cdf(lo) >= alpha > cdf(hi)
        mid = (lo + hi) // 2
        if hypergeom.cdf(d, n, mid, K) >= alpha:
            lo = mid
        else:
            hi = mid
    return lo


def binomial_test_pvalue(n1: int, n: int) -> float:
    """Two-sided p-value of ``n1`` successes in ``n`` trials against ``p = 1/2``.

    ``scipy.stats.binomtest`` (``binom_test`` no longer exists); 1 when ``n = 0``.
    """
    _check_count(n1, n)
    if n == 0:
        return 1.0
    return float(binomtest(int(n1), int(n), 0.5, alternative="two-sided").pvalue)


class SoundBound(NamedTuple):
    """Result of :func:`sound_serialized_lower`."""

    p_lower: float
    d_up: int


class PaperBound(NamedTuple):
    """Result of :func:`paper_lower` and :func:`repro_lower`."""

    p_lower: float
    p_m_up: float
    n_e: float


def sound_serialized_lower(
    c_m: int, d: int, n: int, K: int, alpha1: float, alpha2: float, e: int = 0
) -> SoundBound:
    """The sound SRS bound: hypergeometric correction, then Clopper-Pearson.

    ``c_m`` serialized votes for ``A`` among ``n``; ``d`` of the ``K``
    randomly chosen reference samples voted ``A`` serially but not under the
    reference solve, ``e`` of them the other way round (reference ``A``,
    serial not ``A``).  ``D_up = hypergeometric_upper(d, n, K, alpha1)`` bounds
    the population's mismatches ``D``; the reference count satisfies
    ``C_g >= c_m - D + e`` always, so ``p_lower = CP_lower(max(c_m - D_up + e,
    0), n, alpha2)`` holds with probability ``>= 1 - alpha1 - alpha2``
    (``docs/concepts.md`` has the proof).  ``e = 0`` gives the bound without
    the reverse mismatches (``sound-v1``).
    """
    if not 0 <= c_m <= n:
        raise ValueError(f"need 0 <= c_m <= n, got c_m={c_m}, n={n}")
    if not 0 <= e <= K - d:
        raise ValueError(f"need 0 <= e <= K - d, got e={e}, d={d}, K={K}")
    d_up = hypergeometric_upper(d, n, K, alpha1)
    return SoundBound(clopper_pearson_lower(min(max(c_m - d_up + e, 0), n), n, alpha2), d_up)


def _mismatch_upper(n1: int, n2: int, alpha1: float) -> float:
    """``p_m_up = 1 - CP_lower(N1, N2, alpha1)`` (1 when ``N2 = 0``)."""
    if not 0 <= n1 <= n2:
        raise ValueError(f"need 0 <= N1 <= N2, got N1={n1}, N2={n2}")
    return 1.0 - clopper_pearson_lower(n1, n2, alpha1)


def paper_lower(c_m: int, n1: int, n2: int, n: int, alpha1: float, alpha2: float) -> PaperBound:
    """The authors' rebuttal bound: ``CP_lower((1 - p_m_up) * c_m, n, alpha2)``.

    ``N2`` reference samples voted ``A`` serially, ``N1`` of them also under
    the reference solve.  Approximate: it applies the binomial Clopper-Pearson
    bound to a sample drawn *without* replacement, which can exceed its level
    slightly (see the serialized certifier's docs); prefer ``sound``.
    """
    p_m_up = _mismatch_upper(n1, n2, alpha1)
    n_e = (1.0 - p_m_up) * c_m
    return PaperBound(clopper_pearson_lower(n_e, n, alpha2), p_m_up, n_e)


def repro_lower(c_m: int, n1: int, n2: int, n: int, alpha1: float, alpha2: float) -> PaperBound:
    """The official SRS code's variant: ``CP_lower(N_E, (1 - p_m_up) * n, alpha2)``.

    NOT a valid lower bound: it keeps the serialized proportion ``c_m / n`` and
    only shrinks the sample size, so an SRS that always votes ``A`` gets
    ``p_lower`` near 1 whatever the reference says.  Only for reproducing
    published tables.
    """
    p_m_up = _mismatch_upper(n1, n2, alpha1)
    n_e = (1.0 - p_m_up) * c_m
    return PaperBound(clopper_pearson_lower(n_e, (1.0 - p_m_up) * n, alpha2), p_m_up, n_e)


SERIALIZED_BOUNDS = ("sound", "sound-v1", "paper", "repro")
"""The bounds the serialized certifier offers by name (``sound`` and ``sound-v1`` are valid)."""

SOUND_BOUNDS = ("sound", "sound-v1")
"""The serialized bounds proven to hold with probability ``>= 1 - alpha``."""

BRANCHES = ("hybrid-0.4", "reference")
"""The bounds the ``sound`` bound chooses among, from the selection votes alone."""


class NamedBound(NamedTuple):
    """Result of :func:`serialized_bound`: ``p_lower``, how alpha was split, the details."""

    p_lower: float
    alpha_split: dict[str, float]
    details: dict[str, float | int | str]


def split_alpha(alpha: float, alpha_split: float) -> dict[str, float]:
    """``{"mismatch": alpha * alpha_split, "clopper_pearson": the rest}``."""
    _check_alpha(alpha)
    if not 0.0 < alpha_split < 1.0:
        raise ValueError(f"alpha_split must be in (0, 1), got {alpha_split}")
    alpha1 = alpha * alpha_split
    return {"mismatch": alpha1, "clopper_pearson": alpha - alpha1}


def branch_lower(
    branch: str, c_m: int, d: int, e: int, t: int, n: int, K: int, alpha: float
) -> NamedBound:
    """One branch of the ``sound`` bound, at the full ``alpha``.

    ``t = #{i in S: Y_g = A}`` is Binomial(``K``, ``p_A``) (the reference votes
    are i.i.d. and ``S`` is independent of them), so ``reference`` is
    ``CP_lower(t, K, alpha)``.  ``sound-0.5`` and ``sound-0.9`` are
    :func:`sound_serialized_lower` with ``e`` and ``alpha_1 = 0.5 alpha`` or
    ``0.9 alpha``.  ``hybrid`` is ``max(CP_lower(t, K, alpha/4), sound(3 alpha/8,
    3 alpha/8))``: valid by the union bound over its three confidence events.
    """
    if not 0 <= t <= K:
        raise ValueError(f"need 0 <= t <= K, got t={t}, K={K}")
    if branch == "reference":
        split = {"reference": alpha}
        return NamedBound(clopper_pearson_lower(t, K, alpha), split, {"branch": branch})
    if branch in ("sound-0.5", "sound-0.9"):
        split = split_alpha(alpha, float(branch.removeprefix("sound-")))
        a1, a2 = split["mismatch"], split["clopper_pearson"]
        sound = sound_serialized_lower(c_m, d, n, K, a1, a2, e)
        return NamedBound(sound.p_lower, split, {"branch": branch, "D_up": sound.d_up})
    if branch.startswith("hybrid-"):
        w = float(branch.removeprefix("hybrid-"))
        if not 0.0 < w < 1.0:
            raise ValueError(f"hybrid share must be in (0, 1), got {branch!r}")
        half = (1 - w) * alpha / 2
        split = {"reference": w * alpha, "mismatch": half, "clopper_pearson": half}
        sound = sound_serialized_lower(c_m, d, n, K, half, half, e)
        p_lower = max(clopper_pearson_lower(t, K, w * alpha), sound.p_lower)
        return NamedBound(p_lower, split, {"branch": branch, "D_up": sound.d_up})
    raise ValueError(f"unknown branch {branch!r}; known: {', '.join(BRANCHES)}, hybrid-<share>")


@cache
def select_branch(
    selection_a: int, n0: int, n: int, K: int, alpha: float, branches: tuple[str, ...] = BRANCHES
) -> str:
    """The branch of ``sound`` for ``selection_a`` of ``n0`` selection votes for ``A``.

    A function of the selection votes (and the fixed settings) alone, which are
    independent of ``S`` and of the estimation noise, so the chosen branch is
    valid at the full ``alpha``.  The rule plugs ``p = selection_a / n0`` into
    each branch as if the chains were perfect (``C_m = round(n p)``, ``d = e =
    0``, ``t = round(K p)``) and keeps the largest (the first on ties).
    """
    if not 0 <= selection_a <= n0 or n0 < 1:
        raise ValueError(f"need 0 <= selection_A <= n0, n0 >= 1; got {selection_a}, {n0}")
    p = selection_a / n0
    c_m, t = round(n * p), round(K * p)
    values = [branch_lower(b, c_m, 0, 0, t, n, K, alpha).p_lower for b in branches]
    return branches[values.index(max(values))]


def serialized_bound(
    name: str, counts: dict[str, int], n: int, alpha: float, alpha_split: float = 0.5
) -> NamedBound:
    """Evaluate the serialized bound ``name`` on a certificate's ``counts``.

    ``counts`` holds ``C_m``, ``d``, ``K``, ``N1``, ``reference_A``,
    ``selection_A`` and ``selection_n`` (``sound``: ``e = reference_A - N1``;
    ``alpha_split`` is not used, the chosen branch records its own split),
    ``C_m``, ``d`` and ``K`` (``sound-v1``) or ``C_m``, ``N1`` and ``N2``
    (``paper``, ``repro``), as a serialized certificate records them; the
    last three split ``alpha`` as :func:`split_alpha` does.  The bound does not
    change the sampling, so one certificate's counts give every bound.
    """
    if name == "sound":
        missing = {"selection_A", "selection_n", "reference_A", "N1"} - set(counts)
        if missing:
            raise ValueError(
                f"the sound bound needs counts {sorted(missing)} (older "
                "certificates lack selection_n: add it, it is the certificate's n0)"
            )
        e = counts["reference_A"] - counts["N1"]
        branch = select_branch(counts["selection_A"], counts["selection_n"], n, counts["K"], alpha)
        named = branch_lower(
            branch, counts["C_m"], counts["d"], e, counts["reference_A"], n, counts["K"], alpha
        )
        return NamedBound(named.p_lower, named.alpha_split, {**named.details, "e": e})
    split = split_alpha(alpha, alpha_split)
    a1, a2 = split["mismatch"], split["clopper_pearson"]
    if name == "sound-v1":
        sound = sound_serialized_lower(counts["C_m"], counts["d"], n, counts["K"], a1, a2)
        return NamedBound(sound.p_lower, split, {"D_up": sound.d_up})
    if name in ("paper", "repro"):
        rule = paper_lower if name == "paper" else repro_lower
        paper = rule(counts["C_m"], counts["N1"], counts["N2"], n, a1, a2)
        return NamedBound(paper.p_lower, split, {"p_m_up": paper.p_m_up, "N_E": paper.n_e})
    raise ValueError(f"unknown serialized bound {name!r}; known: {', '.join(SERIALIZED_BOUNDS)}")


def bound_cap(name: str, n: int, K: int, alpha: float, alpha_split: float = 0.5) -> float:
    """The largest ``p_lower`` the serialized bound ``name`` can give: its value on perfect counts.

    Perfect counts: every serialized vote is ``A`` (``C_m = n``), so are all
    ``K`` reference votes, and none mismatches (``d = 0``, ``N1 = N2 = K``).
    Evaluated through :func:`serialized_bound` itself, so the cap follows the
    bound whatever its formula.  No certificate with these ``n``, ``K`` and
    ``alpha`` gets a larger radius than ``noise.radius(bound_cap(...))``.
    """
    if name == "sound":  # the largest of its branches: which one runs depends on the selection
        return max(branch_lower(b, n, 0, 0, K, n, K, alpha).p_lower for b in BRANCHES)
    perfect = {"C_m": n, "d": 0, "K": K, "N1": K, "N2": K, "reference_A": K}
    return serialized_bound(name, perfect, n, alpha, alpha_split).p_lower
