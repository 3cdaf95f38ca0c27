"""Statistics of certification: golden numbers and exact coverage checks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from deqcert.certify import bounds

# --- golden numbers of certification.md -------------------------------------


def test_golden_sound_bound() -> None:
    """n=10000, K=400, d=4, C_m=9900, alpha=0.001 split evenly: D_up=381, radius/sigma=1.593.

    The mismatch bound with e = 0, i.e. ``sound-v1`` (test_sound_bound.py pins ``sound``).
    """
    result = bounds.sound_serialized_lower(9900, 4, 10_000, 400, 0.0005, 0.0005)
    assert result.d_up == 381
    assert round(float(stats.norm.ppf(result.p_lower)), 3) == 1.593


def test_golden_vanilla() -> None:
    """Vanilla with n_A = 9900 of 10000 at alpha = 0.001: radius/sigma = 2.212."""
    p = bounds.clopper_pearson_lower(9900, 10_000, 0.001)
    assert round(float(stats.norm.ppf(p)), 3) == 2.212


def test_zero_mismatches_still_cap_p_lower() -> None:
    """With d = 0 the cap shrinks as K grows but never vanishes."""
    caps = [
        bounds.sound_serialized_lower(10_000, 0, 10_000, k, 0.0005, 0.0005).p_lower
        for k in (100, 400, 2000)
    ]
    vanilla = bounds.clopper_pearson_lower(10_000, 10_000, 0.001)
    assert caps[0] < caps[1] < caps[2] < vanilla


# --- Clopper-Pearson -----------------------------------------------------------


def test_clopper_pearson_closed_forms() -> None:
    assert bounds.clopper_pearson_lower(0, 50, 0.05) == 0.0
    assert bounds.clopper_pearson_lower(50, 50, 0.05) == pytest.approx(0.05 ** (1 / 50))
    assert bounds.clopper_pearson_upper(0, 50, 0.05) == pytest.approx(1 - 0.05 ** (1 / 50))
    assert bounds.clopper_pearson_upper(50, 50, 0.05) == 1.0
    lo = bounds.clopper_pearson_lower(30, 50, 0.05)
    hi = bounds.clopper_pearson_upper(30, 50, 0.05)
    assert lo < 0.6 < hi
    # the defining property: P(Bin(n, lo) >= k) = alpha
    assert stats.binom.sf(29, 50, lo) == pytest.approx(0.05)


def test_clopper_pearson_fractional_counts_interpolate() -> None:
    a = bounds.clopper_pearson_lower(30, 50, 0.05)
    b = bounds.clopper_pearson_lower(30.5, 50, 0.05)
    c = bounds.clopper_pearson_lower(31, 50, 0.05)
    assert a < b < c


@pytest.mark.parametrize("n", [10, 37])
def test_clopper_pearson_exact_coverage(n: int) -> None:
    """For every p on a grid, P(CP_lower(X, n, a) > p) <= a exactly (enumerating X)."""
    alpha = 0.1
    lower = np.array([bounds.clopper_pearson_lower(k, n, alpha) for k in range(n + 1)])
    upper = np.array([bounds.clopper_pearson_upper(k, n, alpha) for k in range(n + 1)])
    for p in np.linspace(0.001, 0.999, 301):
        pmf = stats.binom.pmf(np.arange(n + 1), n, p)
        assert pmf[lower > p].sum() <= alpha + 1e-12
        assert pmf[upper < p].sum() <= alpha + 1e-12


@pytest.mark.parametrize("args", [(5, 4, 0.1), (-1, 4, 0.1), (1, 4, 0.0), (1, 4, 1.0)])
def test_clopper_pearson_rejects_bad_input(args: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError):
        bounds.clopper_pearson_lower(*args)


# --- hypergeometric upper bound -------------------------------------------------


def _scan_upper(d: int, n: int, k: int, alpha: float) -> int:
    population = np.arange(n + 1)
    return int(population[stats.hypergeom.cdf(d, n, population, k) >= alpha].max())


@pytest.mark.parametrize(
    ("d", "n", "k", "alpha"),
    [
        (0, 100, 10, 0.05),
        (3, 100, 10, 0.05),
        (10, 100, 10, 0.05),
        (7, 1000, 200, 0.001),
        (0, 500, 500, 0.01),
        (2, 50, 49, 0.2),
        (4, 10_000, 400, 0.0005),
    ],
)
def test_hypergeometric_upper_matches_a_full_scan(d: int, n: int, k: int, alpha: float) -> None:
    assert bounds.hypergeometric_upper(d, n, k, alpha) == _scan_upper(d, n, k, alpha)


def test_hypergeometric_upper_exact_coverage() -> None:
    """For every population count D, P(D_up(d) < D) <= alpha (enumerating d)."""
    n, k, alpha = 60, 12, 0.1
    d_up = np.array([bounds.hypergeometric_upper(d, n, k, alpha) for d in range(k + 1)])
    for population in range(n + 1):
        pmf = stats.hypergeom.pmf(np.arange(k + 1), n, population, k)
        assert pmf[d_up < population].sum() <= alpha + 1e-12


def test_hypergeometric_upper_full_sample_is_exact() -> None:
    """K = n: the sample is the population, so D_up = d."""
    assert bounds.hypergeometric_upper(7, 40, 40, 0.01) == 7


def test_hypergeometric_upper_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        bounds.hypergeometric_upper(5, 100, 4, 0.1)
    with pytest.raises(ValueError):
        bounds.hypergeometric_upper(1, 10, 11, 0.1)


# --- binomial test ----------------------------------------------------------------


def test_binomial_test_pvalue() -> None:
    assert bounds.binomial_test_pvalue(0, 0) == 1.0
    assert bounds.binomial_test_pvalue(10, 20) == pytest.approx(1.0)
    assert bounds.binomial_test_pvalue(20, 20) == pytest.approx(2 * 0.5**20)
    assert bounds.binomial_test_pvalue(15, 20) == pytest.approx(stats.binomtest(15, 20, 0.5).pvalue)


# --- the serialized bounds ------------------------------------------------------------


def test_paper_and_repro_formulas() -> None:
    c_m, n1, n2, n, a1, a2 = 9900, 396, 400, 10_000, 0.0005, 0.0005
    p_m_up = 1 - bounds.clopper_pearson_lower(n1, n2, a1)
    paper = bounds.paper_lower(c_m, n1, n2, n, a1, a2)
    repro = bounds.repro_lower(c_m, n1, n2, n, a1, a2)
    assert paper.p_m_up == pytest.approx(p_m_up) == repro.p_m_up
    assert paper.n_e == pytest.approx((1 - p_m_up) * c_m)
    assert paper.p_lower == pytest.approx(stats.beta.ppf(a2, paper.n_e, n - paper.n_e + 1))
    n_r = (1 - p_m_up) * n
    assert repro.p_lower == pytest.approx(stats.beta.ppf(a2, repro.n_e, n_r - repro.n_e + 1))


def test_serialized_bounds_without_reference_votes_for_a() -> None:
    """N2 = 0 (no reference sample voted A serially): nothing can be certified."""
    assert bounds.paper_lower(100, 0, 0, 1000, 0.05, 0.05).p_lower == 0.0
    assert bounds.repro_lower(100, 0, 0, 1000, 0.05, 0.05).p_lower == 0.0
    assert bounds.sound_serialized_lower(0, 0, 1000, 50, 0.05, 0.05).p_lower == 0.0


def _always_a_scenario(runs: int, n: int, k: int, p_a: float, seed: int) -> np.ndarray:
    """Reference votes for A in the random subset, per run, when SRS always says A."""
    rng = np.random.default_rng(seed)
    return rng.binomial(k, p_a, size=runs)  # Y_g i.i.d. Bernoulli(p_A); Y_m = A everywhere


def test_repro_overstates_when_srs_always_says_a() -> None:
    """SRS votes A on every sample while h_ref agrees 90 %: repro claims p_lower ~ 0.99.

    The sound and paper bounds stay below the true p_A = 0.9 (up to alpha);
    repro exceeds it in essentially every run.
    """
    n, k, p_a, alpha = 10_000, 400, 0.9, 0.001
    agree = _always_a_scenario(200, n, k, p_a, seed=0)
    repro = [bounds.repro_lower(n, int(a), k, n, alpha / 2, alpha / 2).p_lower for a in agree]
    paper = [bounds.paper_lower(n, int(a), k, n, alpha / 2, alpha / 2).p_lower for a in agree]
    sound = [
        bounds.sound_serialized_lower(n, k - int(a), n, k, alpha / 2, alpha / 2).p_lower
        for a in agree
    ]
    assert min(repro) > 0.98
    assert np.mean(np.array(repro) > p_a) == 1.0
    assert np.mean(np.array(paper) > p_a) <= 0.01
    assert np.mean(np.array(sound) > p_a) <= 0.01


def test_binomial_clopper_pearson_can_exceed_its_level_without_replacement() -> None:
    """Why ``paper`` is labelled approximate: its first step is not exact.

    ``paper`` bounds the agreement rate among the ``C_m`` serialized A-votes
    from a sample of ``N2`` of them drawn *without* replacement, with the
    binomial Clopper-Pearson bound.  For 22 agreeing out of 1,000 and 10
    sampled, P(CP_lower(N1, 10, 0.2) > 0.022) is 0.2003 > 0.2.
    """
    population, agreeing, sampled, alpha = 1000, 22, 10, 0.2
    draws = np.arange(sampled + 1)
    lower = np.array([bounds.clopper_pearson_lower(int(k), sampled, alpha) for k in draws])
    pmf = stats.hypergeom.pmf(draws, population, agreeing, sampled)
    assert pmf[lower > agreeing / population].sum() > alpha
