"""Noise samplers: registration, options, sampling distributions and certified radii."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from deqcert import OptionError, create_noise, list_noises
from deqcert.protocols import NoiseSampler

SPECS = {
    "gaussian": ({"sigma": 0.5}, "l2", stats.norm(scale=0.5)),
    "laplace": ({"scale": 0.5}, "l1", stats.laplace(scale=0.5)),
    "uniform": ({"half_width": 0.5}, "l1", stats.uniform(loc=-0.5, scale=1.0)),
}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_registered_and_described(name: str) -> None:
    options, norm, _ = SPECS[name]
    noise = create_noise(name, **options)
    assert name in list_noises()
    assert isinstance(noise, NoiseSampler)
    assert noise.norm == norm
    assert noise.describe() == {"name": name, **options, "norm": norm}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_bad_options_rejected(name: str) -> None:
    options, _, _ = SPECS[name]
    (key,) = options
    with pytest.raises(OptionError, match=key):
        create_noise(name, **{key: 0.0})
    with pytest.raises(OptionError, match="unknown option 'typo'"):
        create_noise(name, **options, typo=1)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_samples_follow_the_distribution(name: str) -> None:
    options, _, dist = SPECS[name]
    noise = create_noise(name, **options)
    e = noise.sample((40, 1, 10, 10), generator=torch.Generator().manual_seed(0))
    assert e.shape == (40, 1, 10, 10) and e.dtype == torch.get_default_dtype()
    assert stats.kstest(e.flatten().numpy(), dist.cdf).pvalue > 1e-3
    # a shifted distribution is rejected: the test has power at this size
    assert stats.kstest(e.flatten().numpy() + 0.1, dist.cdf).pvalue < 1e-3


@pytest.mark.parametrize("name", sorted(SPECS))
def test_sampling_is_reproducible_and_follows_dtype(name: str) -> None:
    options, _, _ = SPECS[name]
    noise = create_noise(name, **options)
    a = noise.sample((3, 5), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    b = noise.sample((3, 5), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    c = noise.sample((3, 5), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert a.dtype == torch.float64
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_uniform_stays_in_its_cube() -> None:
    noise = create_noise("uniform", half_width=0.3)
    e = noise.sample((10_000,), generator=torch.Generator().manual_seed(0))
    assert float(e.abs().max()) <= 0.3


@pytest.mark.parametrize("name", sorted(SPECS))
def test_no_radius_at_or_below_one_half(name: str) -> None:
    options, _, _ = SPECS[name]
    noise = create_noise(name, **options)
    for p in (0.0, 0.3, 0.5, float("nan")):
        assert noise.radius(p) == 0.0
    assert noise.radius(1.0) == math.inf
    radii = [noise.radius(p) for p in (0.51, 0.6, 0.9, 0.999)]
    assert all(0 < a < b for a, b in zip(radii, radii[1:], strict=False))


def test_gaussian_radius_is_cohen() -> None:
    noise = create_noise("gaussian", sigma=0.25)
    assert noise.radius(0.9) == pytest.approx(0.25 * stats.norm.ppf(0.9))
    assert noise.radius(0.9) == pytest.approx(0.25 * 1.2815515655446004)


@pytest.mark.parametrize("p", [0.55, 0.8, 0.99])
def test_laplace_radius_is_tight_along_one_axis(p: float) -> None:
    """Shifting by the radius along one axis moves the worst half-line set to probability 1/2."""
    scale = 0.7
    r = create_noise("laplace", scale=scale).radius(p)
    assert r == pytest.approx(scale * math.log(1 / (2 * (1 - p))))
    t = stats.laplace(scale=scale).ppf(p)  # the set {e <= t} has probability p
    assert stats.laplace(scale=scale).cdf(t - r) == pytest.approx(0.5)


@pytest.mark.parametrize("p", [0.55, 0.8, 0.99])
def test_uniform_radius_is_tight_along_one_axis(p: float) -> None:
    """A shift by the radius along one axis moves the worst set ``{e <= t}`` to probability 1/2."""
    half_width = 0.4
    r = create_noise("uniform", half_width=half_width).radius(p)
    assert r == pytest.approx(2 * half_width * (p - 0.5))
    dist = stats.uniform(loc=-half_width, scale=2 * half_width)
    assert dist.cdf(dist.ppf(p) - r) == pytest.approx(0.5)
