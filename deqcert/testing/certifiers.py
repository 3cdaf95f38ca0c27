"""Conformance suite for certifiers (built-in or from a plugin).

A *factory* builds a certifier from the options every certifier receives
from the pipeline, ``noise``, ``n0``, ``n``, ``alpha`` and ``batch_size``,
e.g. ``lambda **kw: create_certifier("vanilla", **kw)``.  Every ``check_*``
function takes a factory and raises :class:`ConformanceError` naming what is
wrong.  Run them all with :func:`run_certifier_conformance`, or parametrise
a pytest test over :func:`certifier_conformance_cases`::

    @pytest.mark.parametrize("name, check", certifier_conformance_cases())
    def test_my_certifier(name, check):
        check(lambda **kw: MyCertifier(**kw))

The models are oracles whose smoothed classifier is known exactly
(:mod:`deqcert.testing.oracles`): the linear oracle ``sign(w . x + b)``
(true ``p_A`` and L2 radius under Gaussian noise), the same at chance
(``p_A = 1/2``: nothing may be certified) and a constant model (only its
class may be certified).  They are contractive with exact constants, so
certifiers that need a contraction bound (``verified``) run on them too.
Statistical checks use ``alpha = 0.001`` and fixed seeds: a sound certifier
fails one with probability at most ``alpha`` per certificate.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from ..errors import DeqcertError
from ..protocols import ABSTAIN, Certificate, Certifier, Prediction
from ..registry import create_certifier, create_noise
from ._checks import Check, cases, declared_options, expect, run_checks
from ._checks import ConformanceError as ConformanceError
from .oracles import ConstantOracle, ContractiveLinearOracle

CertifierFactory = Callable[..., Certifier]

SIGMA = 0.25
NOISE: dict[str, Any] = {"name": "gaussian", "sigma": SIGMA}
"""The noise the oracles' ground truth refers to."""

SIZES: dict[str, Any] = {"n0": 32, "n": 500, "alpha": 0.001, "batch_size": 100}
"""Sample sizes, ``alpha`` and batch size every check certifies with."""

SHAPE = (1, 4, 4)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _build(factory: CertifierFactory, **options: Any) -> Certifier:
    return factory(**{"noise": NOISE, **SIZES, **options})


def _oracle(p_a: float, seed: int = 0) -> tuple[ContractiveLinearOracle, Tensor]:
    return ContractiveLinearOracle.with_p_a(p_a, SIGMA, SHAPE, seed=seed)


def _at_chance(seed: int) -> tuple[ContractiveLinearOracle, Tensor]:
    """A linear oracle with ``s(x) = 0``: ``p_A = 1/2`` exactly for any symmetric noise."""
    weight = torch.randn(SHAPE, generator=_gen(seed))
    x = torch.full(SHAPE, 0.5)
    return ContractiveLinearOracle(weight, -float((weight * x).sum())), x


def _without_time(record: Certificate | Prediction) -> dict[str, Any]:
    out = record.to_dict()
    out.pop("seconds", None)
    return out


def _json(record: Any, what: str) -> None:
    try:
        json.dumps(record)
    except (TypeError, ValueError) as exc:
        raise ConformanceError(f"{what} is not JSON-serialisable: {exc}") from None


def _certify(certifier: Certifier, model: Any, x: Tensor, seed: int) -> Certificate:
    cert = certifier.certify(model, x, generator=_gen(seed))
    expect(isinstance(cert, Certificate), f"certify() returned {type(cert).__name__}")
    return cert


def check_protocol_and_describe(factory: CertifierFactory) -> None:
    """A :class:`~deqcert.protocols.Certifier` whose ``describe()`` is JSON-able, with a name."""
    certifier = _build(factory)
    expect(isinstance(certifier, Certifier), "not a Certifier (certify, predict, describe)")
    info = certifier.describe()
    expect(isinstance(info, dict) and isinstance(info.get("name"), str), "describe(): no name")
    _json(info, "describe()")
    for key, value in SIZES.items():
        if key in info:
            expect(info[key] == value, f"describe(): {key}={info[key]!r}, built with {value!r}")


def check_certificate_fields(factory: CertifierFactory) -> None:
    """Every field of the certificate has its type and meaning; ``to_dict()`` is JSON-able."""
    noise = create_noise(NOISE["name"], sigma=SIGMA)
    model, x = _oracle(0.9)
    cert = _certify(_build(factory, noise=noise), model, x, seed=0)
    o = SIZES
    expect(cert.n0 == o["n0"] and cert.n == o["n"], f"n0, n = {cert.n0}, {cert.n}; built with {o}")
    expect(cert.alpha == o["alpha"], f"alpha = {cert.alpha}, built with {o['alpha']}")
    split = sum(float(v) for v in cert.alpha_split.values())
    expect(split <= cert.alpha * (1 + 1e-9), f"alpha_split {cert.alpha_split} spends > alpha")
    expect(cert.prediction in (ABSTAIN, 0, 1), f"prediction {cert.prediction!r} of 2 classes")
    expect(isinstance(cert.radius, float) and cert.radius >= 0, f"radius {cert.radius!r}")
    expect(0.0 <= cert.p_lower <= 1.0, f"p_lower {cert.p_lower!r} is not a probability")
    expect(isinstance(cert.bound, str) and cert.bound != "", "bound must name the bound used")
    expect(isinstance(cert.sound, bool), f"sound must be a bool, got {cert.sound!r}")
    expect(cert.noise == noise.describe(), f"noise {cert.noise} is not the noise's describe()")
    expect(cert.norm == noise.norm, f"norm {cert.norm!r}, the noise's is {noise.norm!r}")
    expect(
        all(isinstance(k, str) and isinstance(v, int) for k, v in cert.counts.items()),
        f"counts must map names to ints, got {cert.counts}",
    )
    expect(isinstance(cert.solvers, dict), "solvers must be a dict")
    expect(isinstance(cert.nfe, int) and cert.nfe > 0, f"nfe={cert.nfe!r}: f was never counted")
    expect(cert.seconds >= 0, f"seconds={cert.seconds!r}")
    expect(0.0 <= cert.unconverged_fraction <= 1.0, "unconverged_fraction is not a fraction")
    _json(cert.to_dict(), "the certificate")


def check_certifies_a_clear_input(factory: CertifierFactory) -> None:
    """``p_A = 0.9``: the true class is certified, with ``radius = noise.radius(p_lower)``."""
    model, x = _oracle(0.9)
    for name, options in (("gaussian", {"sigma": SIGMA}), ("laplace", {"scale": SIGMA}),
                          ("uniform", {"half_width": 0.5})):
        noise = create_noise(name, **options)
        cert = _certify(_build(factory, noise=noise), model, x, seed=1)
        where = f"with {noise.describe()}"
        expect(
            cert.prediction == model.true_class(x),
            f"{where}: prediction {cert.prediction} on an input with p_A ~ 0.9 for class 1",
        )
        expect(cert.p_lower > 0.5, f"{where}: certified with p_lower = {cert.p_lower} <= 1/2")
        want = noise.radius(cert.p_lower)
        expect(
            math.isclose(cert.radius, want, rel_tol=1e-9),
            f"{where}: radius {cert.radius} != noise.radius(p_lower) = {want}",
        )


def check_abstains_at_chance(factory: CertifierFactory) -> None:
    """At ``p_A = 1/2`` exactly nothing is certified: abstain, radius 0 (three seeds)."""
    for seed in range(3):
        model, x = _at_chance(seed)
        cert = _certify(_build(factory), model, x, seed=seed)
        expect(
            cert.prediction == ABSTAIN and cert.radius == 0.0,
            f"seed {seed}: certified class {cert.prediction} with radius {cert.radius} where "
            f"p_A = 1/2 (p_lower = {cert.p_lower})",
        )


def check_sound_on_oracle(factory: CertifierFactory) -> None:
    """Never more than the truth: class, ``p_lower <= p_A`` and radius below the exact one."""
    for p_a, seed in ((0.7, 0), (0.7, 1), (0.97, 2)):
        model, x = _oracle(p_a, seed=seed)
        cert = _certify(_build(factory), model, x, seed=seed)
        where = f"p_A = {p_a}, seed {seed}"
        if cert.prediction == ABSTAIN:
            expect(cert.radius == 0.0, f"{where}: abstained with radius {cert.radius}")
            continue
        expect(cert.prediction == model.true_class(x), f"{where}: certified the wrong class")
        expect(cert.p_lower <= p_a, f"{where}: p_lower = {cert.p_lower} exceeds p_A")
        truth = model.true_radius(x)
        expect(cert.radius <= truth, f"{where}: radius {cert.radius} > true radius {truth}")


def check_constant_model(factory: CertifierFactory) -> None:
    """A model that always says ``k`` gets ``k`` certified and predicted, never another class."""
    certifier = _build(factory)
    for label in (0, 2):
        model = ConstantOracle(label, num_classes=3, input_shape=SHAPE)
        x = torch.rand(SHAPE, generator=_gen(label))
        cert = _certify(certifier, model, x, seed=label)
        expect(
            cert.prediction in (label, ABSTAIN),
            f"certified class {cert.prediction} for a model that always predicts {label}",
        )
        expect(cert.prediction == label, f"abstained on a model that always predicts {label}")
        prediction = certifier.predict(model, x, generator=_gen(label))
        expect(
            prediction.prediction == label,
            f"predict() gave {prediction.prediction} for a model that always predicts {label}",
        )


def check_seeded_determinism(factory: CertifierFactory) -> None:
    """The generator's seed alone fixes the answer; different seeds give different draws."""
    certifier = _build(factory)
    model, x = _oracle(0.75)
    with torch.random.fork_rng(devices=[]):  # the caller's global state is left alone
        torch.manual_seed(1)
        first = _without_time(_certify(certifier, model, x, seed=5))
        torch.manual_seed(2)
        again = _without_time(_certify(certifier, model, x, seed=5))
    expect(first == again, "the same seed gave different certificates (global RNG used?)")
    others = [_without_time(_certify(certifier, model, x, seed=s)) for s in (6, 7)]
    expect(
        any((o["counts"], o["p_lower"]) != (first["counts"], first["p_lower"]) for o in others),
        "seeds 5, 6 and 7 gave identical counts: the generator is not used for the noise",
    )
    a = certifier.predict(model, x, generator=_gen(5))
    b = certifier.predict(model, x, generator=_gen(5))
    expect(_without_time(a) == _without_time(b), "the same seed gave different predictions")


def check_predict(factory: CertifierFactory) -> None:
    """``predict()`` returns a JSON-able :class:`Prediction`, the true class when it is clear."""
    model, x = _oracle(0.95)
    result = _build(factory).predict(model, x, generator=_gen(3))
    expect(isinstance(result, Prediction), f"predict() returned {type(result).__name__}")
    expect(result.prediction == 1, f"predict() gave {result.prediction} where p_A = 0.95")
    expect(result.n == SIZES["n"], f"predict(): n = {result.n}, built with {SIZES['n']}")
    expect(0.0 <= result.p_value <= 1.0, f"predict(): p_value {result.p_value!r}")
    expect(isinstance(result.nfe, int) and result.nfe > 0, f"predict(): nfe={result.nfe!r}")
    _json(result.to_dict(), "the prediction")


def check_bad_inputs(factory: CertifierFactory) -> None:
    """NaN, wrongly shaped or integer inputs raise a one-line :class:`DeqcertError`."""
    certifier = _build(factory)
    model, x = _oracle(0.9)
    nan = x.clone()
    nan[0, 0, 0] = math.nan
    for what, bad in (("NaN", nan), ("wrong shape", x[0]), ("integer", x.long())):
        for method in (certifier.certify, certifier.predict):
            try:
                method(model, bad, generator=_gen(0))
            except DeqcertError as exc:
                expect("\n" not in str(exc), f"{method.__name__}, {what} input: multi-line error")
                continue
            except Exception as exc:
                raise ConformanceError(
                    f"{method.__name__}, {what} input: raised {type(exc).__name__}, "
                    "not a DeqcertError"
                ) from None
            raise ConformanceError(f"{method.__name__} accepted a {what} input")


def check_leaves_model_and_input_alone(factory: CertifierFactory) -> None:
    """The model's training flag, its weights and the input are as they were afterwards."""
    certifier = _build(factory)
    model, x = _oracle(0.8)
    model.train()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    original = x.clone()
    certifier.certify(model, x, generator=_gen(0))
    certifier.predict(model, x, generator=_gen(0))
    expect(model.training, "the model was left in eval mode (restore its training flag)")
    expect(torch.equal(x, original), "the input was modified")
    for key, value in model.state_dict().items():
        expect(torch.equal(value, weights[key]), f"the model's {key!r} changed")


CHECKS: dict[str, Check] = {
    "protocol_and_describe": check_protocol_and_describe,
    "certificate_fields": check_certificate_fields,
    "certifies_a_clear_input": check_certifies_a_clear_input,
    "abstains_at_chance": check_abstains_at_chance,
    "sound_on_oracle": check_sound_on_oracle,
    "constant_model": check_constant_model,
    "seeded_determinism": check_seeded_determinism,
    "predict": check_predict,
    "bad_inputs": check_bad_inputs,
    "leaves_model_and_input_alone": check_leaves_model_and_input_alone,
}
"""Every certifier conformance check, by name."""


def certifier_conformance_cases() -> Iterator[tuple[str, Check]]:
    """``(name, check)`` pairs, for ``pytest.mark.parametrize``."""
    return cases(CHECKS)


def registered_certifier(name: str) -> CertifierFactory:
    """A factory of the registered certifier ``name``, with its ``conformance_options``."""
    declared = declared_options("certifier", name)

    def factory(**options: Any) -> Certifier:
        return create_certifier(name, **{**declared, **options})  # type: ignore[no-any-return]

    return factory


def run_certifier_conformance(factory: CertifierFactory) -> None:
    """Run every check on ``factory``; raise :class:`ConformanceError` at the first failure."""
    run_checks(CHECKS, factory)
