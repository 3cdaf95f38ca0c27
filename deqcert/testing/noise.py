"""Conformance suite for noise samplers (built-in or from a plugin).

A *factory* is a callable with no arguments that builds the sampler, e.g.
``lambda: create_noise("gaussian", sigma=0.5)``.  Every ``check_*`` function
takes a factory and raises :class:`ConformanceError` naming what is wrong.
Run them all with :func:`run_noise_conformance`, or parametrise a pytest test
over :func:`noise_conformance_cases`::

    @pytest.mark.parametrize("name, check", noise_conformance_cases())
    def test_my_noise(name, check):
        check(lambda: MyNoise(scale=0.5))

Noise is drawn for inputs of shape :data:`INPUT_SHAPE` (``d = 36``); a
sampler whose options depend on the input (``gaussian-linf``'s ``dim``) must
be built for that shape.

:func:`check_radius_is_sound` tests the certificate itself against the
sampler's own draws: for a direction ``v`` and the half-space
``A = {e : v . e <= t}`` of probability ``p``, shifting the input by
``delta = R v / ||v||`` (norm ``R`` in the sampler's norm) leaves ``A``
probability ``P(v . e <= t - v . delta)``, which must stay at or above 1/2
for the radius ``R = radius(p)`` to be valid (a base classifier that
predicts the class on ``A`` would otherwise lose it within the radius).  The
probabilities are measured on the draws, along every axis, the diagonal and
a random sign vector.  Every built-in radius is tight along its worst
direction (an axis for L1, any direction for Gaussian L2, the diagonal for
L-infinity), so a radius 10% too large fails.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from ..protocols import NoiseSampler
from ..registry import create_noise
from ._checks import Check, cases, declared_options, expect, run_checks
from ._checks import ConformanceError as ConformanceError

NoiseFactory = Callable[[], NoiseSampler]

INPUT_SHAPE: tuple[int, ...] = (2, 3, 6)
"""Shape of one input the suite draws noise for (``C * H * W = 36``)."""

PROBABILITIES = (0.6, 0.75, 0.9)
"""Values of ``p_lower`` the radius is checked at."""

SOUNDNESS_DRAWS = 50_000
SOUNDNESS_SEED = 11
SOUNDNESS_TOLERANCE = 0.025
"""Slack in probability for sampling error in :func:`check_radius_is_sound`.

The built-ins need at most 0.016 at this sample size; a radius 10% too large
loses 0.04 or more."""

_NORM = re.compile(r"^l(?P<p>inf|[0-9]+(\.[0-9]+)?)$")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _draw(
    noise: NoiseSampler, batch: int, seed: int, dtype: torch.dtype = torch.float64
) -> Tensor:
    return noise.sample((batch, *INPUT_SHAPE), generator=_gen(seed), dtype=dtype)


def norm_of(v: Tensor, norm: str) -> float:
    """``||v||`` in the norm named ``norm`` (``l1``, ``l2``, ``linf``, ``l<p>``)."""
    match = _NORM.match(norm)
    expect(match is not None, f"norm {norm!r} is not one of 'l1', 'l2', 'linf' or 'l<p>'")
    assert match is not None
    order = math.inf if match["p"] == "inf" else float(match["p"])
    return float(torch.linalg.vector_norm(v.flatten().double(), ord=order))


def check_protocol(factory: NoiseFactory) -> None:
    """Implements :class:`~deqcert.protocols.NoiseSampler` and names a known kind of norm."""
    noise = factory()
    expect(isinstance(noise, NoiseSampler), "not a NoiseSampler (sample, radius, norm)")
    expect(isinstance(noise.norm, str) and noise.norm != "", "norm must be a non-empty string")
    norm_of(torch.ones(2), noise.norm)


def check_sample_shape_dtype_device(factory: NoiseFactory) -> None:
    """Draws have the requested shape and dtype, the default dtype otherwise, on the device."""
    noise = factory()
    for batch in (1, 5):
        shape = (batch, *INPUT_SHAPE)
        for dtype in (torch.float32, torch.float64, None):
            for device in (None, "cpu", torch.device("cpu")):
                e = noise.sample(shape, generator=_gen(0), device=device, dtype=dtype)
                where = f"sample(shape={shape}, dtype={dtype}, device={device!r})"
                expect(isinstance(e, Tensor), f"{where}: returned {type(e).__name__}")
                expect(tuple(e.shape) == shape, f"{where}: got shape {tuple(e.shape)}")
                want = dtype or torch.get_default_dtype()
                expect(e.dtype == want, f"{where}: got dtype {e.dtype}, expected {want}")
                expect(e.device.type == "cpu", f"{where}: draws are on {e.device}")
                expect(bool(torch.isfinite(e).all()), f"{where}: non-finite draws")
                expect(bool((e != 0).any()), f"{where}: all draws are zero")


def check_seeded_determinism(factory: NoiseFactory) -> None:
    """Draws depend on the generator's seed only: not on the global RNG or the instance."""
    first, second = factory(), factory()
    with torch.random.fork_rng(devices=[]):  # the caller's global state is left alone
        torch.manual_seed(1)
        a = _draw(first, 4, seed=3)
        torch.manual_seed(2)
        global_state = torch.get_rng_state()
        b = _draw(second, 4, seed=3)
        expect(
            torch.equal(torch.get_rng_state(), global_state),
            "sample() used the global random state; draw with the generator it is given",
        )
    expect(torch.equal(a, b), "the same seed gave different draws")
    expect(not torch.equal(a, _draw(first, 4, seed=4)), "different seeds gave the same draws")
    gen = _gen(5)
    shape = (4, *INPUT_SHAPE)
    one = first.sample(shape, generator=gen, dtype=torch.float64)
    two = first.sample(shape, generator=gen, dtype=torch.float64)
    expect(not torch.equal(one, two), "two draws from one generator are equal (it did not advance)")


def check_draws_independent(factory: NoiseFactory) -> None:
    """Rows of a batch and coordinates of an input are uncorrelated (i.i.d.-looking draws)."""
    e = _draw(factory(), 4000, seed=7).flatten(1)
    centred = e - e.mean(dim=0)
    scale = centred.std(dim=0)
    expect(bool((scale > 0).all()), "some coordinate never varies across draws")
    z = centred / scale
    corr = (z.T @ z) / (z.shape[0] - 1)
    off = (corr - torch.diag(torch.diagonal(corr))).abs().max()
    expect(float(off) < 0.1, f"coordinates are correlated (|r| up to {float(off):.3f})")
    rows = (z[0::2] * z[1::2]).mean()  # consecutive rows of the batch, pooled over coordinates
    expect(abs(float(rows)) < 0.05, f"consecutive batch rows are correlated (r={float(rows):.3f})")


def check_radius_edges(factory: NoiseFactory) -> None:
    """Radius 0 for ``p_lower <= 1/2`` (and NaN); positive, finite, non-decreasing above."""
    noise = factory()
    for p in (0.0, 0.25, 0.5, math.nan):
        r = noise.radius(p)
        expect(r == 0.0, f"radius({p}) = {r!r}; no certificate at p_lower <= 1/2 (must be 0)")
    ps = (0.5 + 1e-6, *PROBABILITIES, 0.999, 0.999999)
    radii = [noise.radius(p) for p in ps]
    for p, r in zip(ps, radii, strict=True):
        expect(isinstance(r, float), f"radius({p}) is a {type(r).__name__}, not a float")
        expect(math.isfinite(r) and r > 0, f"radius({p}) = {r!r}, expected finite and > 0")
    for i in range(len(ps) - 1):
        expect(
            radii[i + 1] >= radii[i],
            f"radius decreases: radius({ps[i]}) = {radii[i]} > "
            f"radius({ps[i + 1]}) = {radii[i + 1]}",
        )
    top = noise.radius(1.0)
    expect(top >= radii[-1], f"radius(1.0) = {top} is below radius(0.999999) = {radii[-1]}")


def check_radius_is_sound(factory: NoiseFactory) -> None:
    """No half-space of probability ``p`` loses its majority within ``radius(p)`` (see module)."""
    noise = factory()
    e = _draw(noise, SOUNDNESS_DRAWS, seed=SOUNDNESS_SEED).flatten(1)
    dim = e.shape[1]
    ones = torch.ones(dim, dtype=torch.float64)
    signs = torch.randint(0, 2, (dim,), generator=_gen(12)).double().mul(2).sub(1)
    names = [f"axis {j}" for j in range(dim)] + ["diagonal", "random signs"]
    projections = torch.cat([e, e.sum(dim=1, keepdim=True), (e @ signs).unsqueeze(1)], dim=1)
    # v . delta for delta = R v / ||v|| (norm R in the sampler's norm) is R ||v||_2^2 / ||v||
    axis = 1.0 / norm_of(ones[:1], noise.norm)
    per_radius = torch.tensor(
        [axis] * dim + [dim / norm_of(ones, noise.norm), dim / norm_of(signs, noise.norm)],
        dtype=torch.float64,
    )
    probabilities = torch.tensor(PROBABILITIES, dtype=torch.float64)
    thresholds = torch.quantile(projections, probabilities, dim=0)  # A = {v . e <= t}, P(A) = p
    for p, threshold in zip(PROBABILITIES, thresholds, strict=True):
        radius = noise.radius(p)
        kept = (projections <= threshold - radius * per_radius).double().mean(dim=0)
        worst = int(kept.argmin())
        expect(
            float(kept[worst]) >= 0.5 - SOUNDNESS_TOLERANCE,
            f"radius({p}) = {radius:.4g} ({noise.norm}) is too large: shifted by it along the "
            f"{names[worst]} direction, a set of probability {p} keeps only "
            f"{float(kept[worst]):.4f} < 1/2 (measured on {SOUNDNESS_DRAWS} draws)",
        )


def check_describe(factory: NoiseFactory) -> None:
    """``describe()``: a JSON-able dict with the name, its norm and every option's value."""
    noise = factory()
    info = noise.describe()
    expect(isinstance(info, dict), f"describe() returned {type(info).__name__}, not a dict")
    expect(isinstance(info.get("name"), str) and info["name"] != "", "describe(): no name")
    registered = getattr(type(noise), "registry_name", "")
    if registered:
        expect(info["name"] == registered, f"describe(): name {info['name']!r} != {registered!r}")
    try:
        json.dumps(info, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConformanceError(f"describe() is not JSON-serialisable: {exc}") from None
    if "norm" in info:
        expect(info["norm"] == noise.norm, f"describe(): norm {info['norm']!r} != {noise.norm!r}")
    options = getattr(noise, "options", None)
    for key in getattr(type(options), "model_fields", {}):
        expect(key in info, f"describe() lacks option {key!r}")
        expect(info[key] == getattr(options, key), f"describe(): {key}={info[key]!r} is stale")
    expect(factory().describe() == info, "two samplers from the same options describe differently")


CHECKS: dict[str, Check] = {
    "protocol": check_protocol,
    "sample_shape_dtype_device": check_sample_shape_dtype_device,
    "seeded_determinism": check_seeded_determinism,
    "draws_independent": check_draws_independent,
    "radius_edges": check_radius_edges,
    "radius_is_sound": check_radius_is_sound,
    "describe": check_describe,
}
"""Every noise conformance check, by name."""


def noise_conformance_cases() -> Iterator[tuple[str, Check]]:
    """``(name, check)`` pairs, for ``pytest.mark.parametrize``."""
    return cases(CHECKS)


def registered_noise(name: str) -> NoiseFactory:
    """A factory of the registered sampler ``name``, built with its ``conformance_options``."""
    declared = declared_options("noise", name)
    return lambda: create_noise(name, **declared)  # type: ignore[no-any-return]


def run_noise_conformance(factory: NoiseFactory) -> None:
    """Run every check on ``factory``; raise :class:`ConformanceError` at the first failure."""
    run_checks(CHECKS, factory)
