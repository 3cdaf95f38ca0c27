"""Certify core: the optional protocols, the one input check and the one certificate builder."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from _helpers import NOISE, SIGMA, gen, make_certifier
from test_verified import oracle as contractive_oracle
from torch import Tensor

from deqcert import DataError, DeqcertError, create_solver
from deqcert.certify.base import check_input
from deqcert.certify.vanilla import VanillaCertifier
from deqcert.noise.gaussian import GaussianNoise
from deqcert.protocols import (
    BudgetedSolver,
    Certifier,
    MaskedSolver,
    ModelCheckingCertifier,
    ShapedModel,
    SolverResult,
    accepts_budget,
    accepts_mask,
    solve_with,
)
from deqcert.registry import certifiers
from deqcert.run import CertifyConfig
from deqcert.solvers.chain import ChainSolver
from deqcert.testing.oracles import LinearOracle


class PluginSolver:
    """A Picard solver that is no ``SolverBase``: records the keywords of every call."""

    def __init__(self, max_iter: int = 10) -> None:
        self.max_iter = max_iter
        self.calls: list[dict[str, Any]] = []

    def solve(self, f: Callable[[Tensor], Tensor], z0: Tensor, **extras: Any) -> SolverResult:
        self.calls.append(dict(extras))
        steps = min(self.max_iter, extras.get("max_iter") or self.max_iter)
        z = z0
        for _ in range(steps):
            z = f(z)
        batch = z0.shape[0]
        return SolverResult(
            z=z,
            nfe=steps,
            residual=torch.zeros(batch),
            steps=torch.full((batch,), steps),
            converged=torch.zeros(batch, dtype=torch.bool),
        )

    def describe(self) -> dict[str, Any]:
        return {"name": "plugin", "max_iter": self.max_iter}


class BudgetedPlugin(PluginSolver):
    accepts_max_iter = True


class MaskedPlugin(PluginSolver):
    accepts_frozen = True


class RefusingPlugin(PluginSolver):
    accepts_max_iter = False  # the attribute alone is not an opt-in


# -- the optional solver protocols --------------------------------------------------------


@pytest.mark.parametrize("name", ["naive", "anderson", "broyden", "chain"])
def test_built_in_solvers_opt_into_budget_and_mask(name: str) -> None:
    solver = create_solver(name)
    assert isinstance(solver, BudgetedSolver) and isinstance(solver, MaskedSolver)
    assert accepts_budget(solver) and accepts_mask(solver)


def test_plugin_solvers_opt_in_by_class_attribute_only() -> None:
    assert not accepts_budget(PluginSolver()) and not accepts_mask(PluginSolver())
    assert accepts_budget(BudgetedPlugin()) and not accepts_mask(BudgetedPlugin())
    assert accepts_mask(MaskedPlugin()) and not accepts_budget(MaskedPlugin())
    assert isinstance(RefusingPlugin(), BudgetedSolver) and not accepts_budget(RefusingPlugin())


def test_solve_with_passes_only_what_the_solver_accepts() -> None:
    frozen = torch.tensor([True, False])
    for solver, expected in [
        (PluginSolver(), {}),
        (BudgetedPlugin(), {"max_iter": 3}),
        (MaskedPlugin(), {"frozen": frozen}),
        (RefusingPlugin(), {}),
    ]:
        solve_with(solver, lambda z: 0.5 * z, torch.ones(2, 3), max_iter=3, frozen=frozen)
        assert solver.calls == [expected]


def test_a_budgeted_plugin_solver_gets_the_verified_certifiers_cap() -> None:
    model, x = contractive_oracle(p_a=0.9, contraction=0.99)
    budgeted, plain = BudgetedPlugin(max_iter=40), PluginSolver(max_iter=40)
    for solver in (budgeted, plain):
        make_certifier(
            "verified", solver=solver, max_steps=6, n0=8, n=16, batch_size=8, chain_start="zeros"
        ).certify(model, x, generator=gen(0))
    assert budgeted.calls and all(0 < call["max_iter"] <= 5 for call in budgeted.calls)
    assert plain.calls and all(call == {} for call in plain.calls)  # cannot be capped


def test_a_budgeted_plugin_stage_gets_the_chain_solvers_cap() -> None:
    stage = BudgetedPlugin(max_iter=50)
    chain = ChainSolver(solvers=[stage], max_iter=7, tol=1e-12)
    result = chain.solve(lambda z: 0.9 * z + 1.0, torch.zeros(3, 2))
    assert stage.calls == [{"max_iter": 7}] and result.nfe == 7
    masked = MaskedPlugin(max_iter=4)
    ChainSolver(solvers=[masked], max_iter=7).solve(lambda z: 0.9 * z, torch.ones(3, 2))
    assert set(masked.calls[0]) == {"frozen"}


# -- the input check ------------------------------------------------------------------------


@pytest.fixture
def shaped() -> Any:
    model, x = LinearOracle.with_p_a(0.9, SIGMA)
    assert isinstance(model, ShapedModel)
    return model, x


@pytest.mark.parametrize(
    ("bad", "kwargs", "match"),
    [
        (lambda x: x.long(), {}, r"^here: x must be a float tensor, got a torch.int64 tensor$"),
        (lambda x: [1.0], {}, "got list"),
        (lambda x: x[0], {}, r"^here: expected x of shape \(1, 4, 4\), got \(4, 4\)$"),
        (lambda x: x.fill_(math.nan), {}, r"^here: x contains NaN or infinite values"),
        (lambda x: x, {"label": 2}, r"^here: label 2 is out of range; the model has 2 classes$"),
        (lambda x: x, {"label": -1}, "label -1"),
    ],
)
def test_check_input_rejects_with_one_line_naming_where(
    shaped: Any, bad: Callable[[Tensor], Any], kwargs: dict[str, Any], match: str
) -> None:
    model, x = shaped
    with pytest.raises(DataError, match=match) as info:
        check_input(model, bad(x.clone()), where="here", **kwargs)
    assert "\n" not in str(info.value)


def test_check_input_accepts_good_inputs_and_uses_ndim_for_shapeless_models(shaped: Any) -> None:
    model, x = shaped
    check_input(model, x, gen(), label=1, where="here", ndim=3)
    shapeless = object()  # no input_shape: any shape, unless ndim is given
    check_input(shapeless, torch.zeros(5))
    with pytest.raises(DataError, match=r"expected x of shape \(C, H, W\), got \(5,\)"):
        check_input(shapeless, torch.zeros(5), ndim=3)
    with pytest.raises(DataError, match="at least one dimension"):
        check_input(shapeless, torch.tensor(1.0))


# -- every certifier builds its Certificate with the one helper --------------------------------


class BrokenRadius(GaussianNoise):
    """Gaussian noise whose radius is wrong: the certificate helper must refuse it."""

    registry_name = "broken-radius"

    def radius(self, p_lower: float) -> float:
        return -1.0 if p_lower > 0.5 else 0.0


CERTIFIERS: dict[str, dict[str, Any]] = {
    "vanilla": {"solver": 30},
    "serialized": {"solver": 1, "warmup_solver": 10, "reference_solver": 30,
                   "reference_samples": 40},
    "verified": {"solver": 1, "reference_solver": 20},
    "verified-fallback": {"solver": 1, "reference_solver": 30, "fallback": "vanilla"},
}


def _certify(kind: str, noise: Any) -> Any:
    name = kind.removesuffix("-fallback")
    certifier = make_certifier(name, noise=noise, n0=20, n=100, batch_size=50, **CERTIFIERS[kind])
    if name == "verified" and kind == "verified":
        model, x = contractive_oracle(p_a=0.99)
    else:
        model, x = LinearOracle.with_p_a(0.99, SIGMA)
    return certifier.certify(model, x, generator=gen(3))


@pytest.mark.parametrize("kind", sorted(CERTIFIERS))
def test_each_certifier_builds_its_certificate_with_the_shared_helper(kind: str) -> None:
    with pytest.raises(DeqcertError, match=r"returned radius -1.0 for p_lower = 0\."):
        _certify(kind, BrokenRadius(sigma=SIGMA))
    cert = _certify(kind, NOISE)
    assert next(iter(cert.extra)) == "candidate"  # the helper puts the candidate first
    assert (cert.n0, cert.n, cert.alpha) == (20, 100, 0.1)
    assert cert.noise == GaussianNoise(sigma=SIGMA).describe() and cert.norm == "l2"
    assert cert.prediction == cert.extra["candidate"] == 1 and cert.radius > 0
    assert cert.seconds >= 0


# -- certifiers that check the model themselves -------------------------------------------------


class PickyCertifier(VanillaCertifier):
    """Vanilla smoothing that refuses every model up front (a plugin, not ``verified``)."""

    registry_name = "picky"

    def check_model(self, model: Any) -> None:
        raise DataError(f"picky: will not certify {type(model).__name__}")


@pytest.fixture
def picky() -> Iterator[None]:
    certifiers.register("picky", PickyCertifier)
    yield
    certifiers.unregister("picky")


def test_the_pipeline_asks_any_model_checking_certifier(picky: None, tiny_checkpoint: Path) -> None:
    assert isinstance(PickyCertifier(noise=NOISE), ModelCheckingCertifier)
    assert not isinstance(VanillaCertifier(noise=NOISE), ModelCheckingCertifier)
    assert isinstance(VanillaCertifier(noise=NOISE), Certifier)
    config = CertifyConfig.from_sources(
        values={"checkpoint": str(tiny_checkpoint), "indices": "0", "certifier": {"name": "picky"}}
    )
    with pytest.raises(DataError, match="picky: will not certify"):
        config.build()
