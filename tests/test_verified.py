"""The ``verified`` certifier: soundness, the per-sample check, bookkeeping and fallback."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from _helpers import NOISE, SIGMA, gen, make_certifier
from scipy.stats import binom
from torch import Tensor

from deqcert import (
    ABSTAIN,
    DeqcertError,
    OptionError,
    create_certifier,
    create_model,
    create_solver,
    list_certifiers,
    registry,
)
from deqcert.certify.verified import NotContractiveError, VerifiedCertifier, Verifier
from deqcert.models.contractive import ContractionBound, ContractiveConvDEQ, ContractiveMLPDEQ
from deqcert.protocols import Certifier, SolverResult
from deqcert.testing.oracles import ContractiveLinearOracle, LinearOracle

COMPONENTS: list[tuple[registry.Registry, str, Any]] = [
    (registry.certifiers, "verified", VerifiedCertifier),
    (registry.models, "contractive-mlpdeq", ContractiveMLPDEQ),
    (registry.models, "contractive-convdeq", ContractiveConvDEQ),
]


@pytest.fixture(autouse=True, scope="module")
def registered() -> Iterator[None]:
    """Register the certifier and models at run time unless entry points already do."""
    added = [(reg, name) for reg, name, obj in COMPONENTS if name not in reg]
    for reg, name, obj in COMPONENTS:
        if (reg, name) in added:
            reg.register(name, obj)
    yield
    for reg, name in added:
        reg.unregister(name)


ContractiveOracle = ContractiveLinearOracle
"""The linear oracle with its exact constants; ``h_exact = h_ref = sign(s)``."""


def oracle(p_a: float = 0.8, contraction: float = 0.9, seed: int = 0) -> tuple[Any, Tensor]:
    model, x = LinearOracle.with_p_a(p_a, SIGMA, contraction=contraction, seed=seed)
    return ContractiveOracle(model.weight, model.bias, contraction), x


def verified(**options: Any) -> Certifier:
    defaults = {"solver": 1, "reference_solver": 20, "n0": 10, "n": 100, "batch_size": 32}
    return make_certifier("verified", **{**defaults, **options})  # type: ignore[no-any-return]


# -- contract ---------------------------------------------------------------------------


def test_registered_and_described() -> None:
    assert "verified" in list_certifiers()
    cert = verified()
    assert isinstance(cert, Certifier)
    info = cert.describe()
    assert info["name"] == "verified" and info["sound"] is True
    assert info["bound"] == "clopper-pearson (exact-serialized)"
    assert info["solver"]["name"] == "naive"
    json.dumps(info)


@pytest.mark.parametrize(
    "bad",
    [{"steps": 3}, {"max_steps": 0}, {"chain_start": "warmup"}, {"fallback": "ignore"}],
)
def test_bad_options_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(OptionError):
        verified(**bad)


def test_certificate_records_what_it_did() -> None:
    model, x = oracle(p_a=0.95)
    cert = verified(chain_start="chain").certify(model, x, generator=gen(1))
    assert cert.bound == "clopper-pearson (exact-serialized)" and cert.sound
    assert cert.prediction == 1 and cert.radius > 0
    assert (
        cert.extra["nfe"]["solver"] + cert.extra["nfe"]["check"] + cert.extra["nfe"]["anchor"]
        == cert.nfe
    )
    assert cert.extra["lipschitz"] == pytest.approx(0.9)
    assert cert.extra["readout_lipschitz"] == pytest.approx(math.sqrt(2))
    assert "h_exact" in cert.extra["certified_classifier"]
    assert cert.solvers["max_steps"] == 50
    assert cert.counts["undecided"] == 0 and cert.unconverged_fraction == 0.0
    assert sum(cert.extra["estimation_counts"]) + cert.counts["undecided"] == cert.n
    json.dumps(cert.to_dict())


# -- exactness: warm starts change the cost, never the votes ------------------------------


@pytest.mark.parametrize("chain_start", ["anchor", "chain", "zeros"])
def test_votes_equal_vanilla_on_the_same_noise(chain_start: str) -> None:
    model, x = oracle(p_a=0.7, contraction=0.95)
    reference = create_certifier(
        "vanilla",
        noise=NOISE,
        solver={"name": "naive", "max_iter": 3},  # h_ref = sign(s) after any number of steps
        n0=10,
        n=100,
        batch_size=32,
        alpha=0.1,
    )
    expected = reference.certify(model, x, generator=gen(5))
    # a budget large enough for the slow contraction (c = 0.95) to decide every sample
    got = verified(chain_start=chain_start, max_steps=2000).certify(model, x, generator=gen(5))
    assert got.counts["undecided"] == 0
    assert got.counts["n_A"] == expected.counts["n_A"]
    assert got.extra["estimation_counts"] == expected.extra["estimation_counts"]
    assert got.radius == expected.radius
    assert got.counts["extra_steps"] > 0  # one naive step is not enough: the check did work


def test_truncated_votes_really_differ_from_the_reference() -> None:
    """Sanity of the setting above: one warm-started step often predicts the wrong class."""
    model, x = oracle(p_a=0.7, contraction=0.95)
    noisy = x + SIGMA * torch.randn((200, *x.shape), generator=gen(2))
    u = model.inject(noisy)
    truth = (model.score(noisy) > 0).long()
    anchor = model.inject(x.unsqueeze(0)).expand_as(u)
    one_step = model.readout(model.f(anchor, u)).argmax(dim=1)
    assert (one_step != truth).float().mean() > 0.1


# -- soundness ------------------------------------------------------------------------------


def overstatement_rate(
    certifier: Certifier, runs: int, p_a: float, seed0: int = 0
) -> tuple[int, int]:
    """(over-statements, certified runs) over ``runs`` oracles with a known ``p_A``."""
    bad = certified = 0
    for run in range(runs):
        model, x = oracle(p_a=p_a, contraction=0.95, seed=run)
        cert = certifier.certify(model, x, generator=gen(seed0 + run))
        if cert.prediction == ABSTAIN:
            continue
        certified += 1
        if cert.prediction != model.true_class(x) or cert.radius > model.true_radius(x):
            bad += 1
    return bad, certified


def allowed(runs: int, alpha: float) -> int:
    """Largest over-statement count a level-``alpha`` certifier reaches with probability > 1e-3."""
    return int(binom.ppf(1 - 1e-3, runs, alpha))


def test_overstatement_rate_at_most_alpha() -> None:
    runs, alpha = 120, 0.1
    cert = verified(alpha=alpha, n=60, chain_start="anchor")
    bad, certified = overstatement_rate(cert, runs, p_a=0.8)
    assert certified > runs // 2  # the check is not vacuous: most runs certify something
    assert bad <= allowed(runs, alpha)


def test_accepting_unverified_votes_would_be_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same harness flags a certifier that trusts one warm-started step: the test has power."""

    def trust_everything(self: Verifier, z: Tensor, u64: Tensor) -> tuple[Tensor, ...]:
        y = self.model.f(z.to(torch.float64), u64)
        top = self.model.readout(y).argmax(dim=1)
        yes = torch.ones_like(top, dtype=torch.bool)
        return yes, top, y, yes  # verified, top, checked point, finite

    monkeypatch.setattr(Verifier, "examine", trust_everything)
    runs, alpha = 60, 0.1
    bad, _ = overstatement_rate(verified(alpha=alpha, n=60), runs, p_a=0.8)
    assert bad > allowed(runs, alpha)


@pytest.mark.slow
@pytest.mark.parametrize("chain_start", ["anchor", "chain"])
def test_overstatement_rate_many_runs(chain_start: str) -> None:
    runs, alpha = 1000, 0.1
    bad, certified = overstatement_rate(
        verified(alpha=alpha, n=100, chain_start=chain_start), runs, p_a=0.75, seed0=10_000
    )
    assert certified > runs // 2
    assert bad <= allowed(runs, alpha)


# -- the per-sample check ------------------------------------------------------------------


def exact_fixed_point(model: Any, u: Tensor) -> Tensor:
    """The fixed point to machine precision in float64 (Picard iteration of a contraction)."""
    z = model.init_state(u)
    for _ in range(3000):
        nxt = model.f(z, u)
        done = float((nxt - z).abs().max()) <= 1e-15 * max(1.0, float(z.abs().max()))
        z = nxt
        if done:
            break
    return z


def random_contractive_mlp(seed: int, adversarial: bool) -> Any:
    """A small ``contractive-mlpdeq`` with random weights (4 classes, state of 8).

    ``adversarial``: ``W = gamma I`` and a large positive injection, so ReLU
    is the identity near ``z*`` and ``f`` contracts by exactly ``gamma`` in
    every direction: the bound ``||y - z*|| <= L ||y - z|| / (1 - L)`` is
    then attained.
    """
    g = gen(seed)
    low = 0.6 if adversarial else 0.3  # the naive check is fooled only when gamma > 1/3
    gamma = float(torch.empty(1).uniform_(low, 0.9 if adversarial else 0.95, generator=g))
    torch.manual_seed(seed)
    model = create_model(
        "contractive-mlpdeq",
        image_size=4,
        hidden=8,
        num_classes=4,
        gamma=gamma,
        activation="relu" if adversarial or seed % 2 else "tanh",
    ).eval()
    with torch.no_grad():
        layer = model.input_layers[-1]
        if adversarial:
            model.recurrent.raw.copy_(torch.eye(8))
            layer.weight.mul_(0.1)
            layer.bias.fill_(3.0)
        else:
            layer.weight.mul_(3.0)
        # near ties: cancel the logits of a typical input, up to a small random offset
        exact = copy.deepcopy(model).double()
        typical = exact.inject(torch.full((1, 1, 4, 4), 0.5, dtype=torch.float64))
        logits = exact.readout(exact_fixed_point(exact, typical))[0]
        offset = 0.3 * torch.randn(4, generator=g, dtype=torch.float64)
        model.output_layer.bias.sub_((logits - offset).float())
    return model


@pytest.mark.parametrize("adversarial", [True, False], ids=["tight", "random"])
@pytest.mark.parametrize("seed", range(4))
def test_check_never_accepts_a_wrong_prediction(seed: int, adversarial: bool) -> None:
    """States whose image ``y = f(z)`` lies at all distances from ``z*``, towards the runner-up."""
    g = gen(100 + seed)
    verifier = Verifier.for_model(random_contractive_mlp(seed, adversarial))
    exact = verifier.model
    batch = 512
    x = torch.rand((batch, 1, 4, 4), generator=g)
    with torch.no_grad():
        u64 = exact.inject(x.double())
        z_star = exact_fixed_point(exact, u64)
        logits = exact.readout(z_star)
        truth = logits.argmax(dim=1)
        runner = logits.topk(2, dim=1).indices[:, 1]
        w = exact.output_layer.weight
        gap = w[runner] - w[truth]
        margin = (logits.gather(1, truth[:, None]) - logits.gather(1, runner[:, None])).squeeze(1)
        # target offset of y from z*: t times the distance at which runner-up overtakes
        t = (
            margin
            / gap.norm(dim=1)
            * torch.empty(batch, dtype=torch.float64).uniform_(0.0, 3.0, generator=g)
        )
        offset = t[:, None] * gap / gap.norm(dim=1, keepdim=True)
        offset = offset + 1e-3 * t[:, None] * torch.randn(offset.shape, generator=g).double()
        # z with f(z) = z* + offset where f is affine (W z + u on the active set)
        weight = exact.recurrent()
        z = (z_star + torch.linalg.solve(weight, offset.T).T).float()
        ok, top, y = verifier.check(z, u64)
        wrong = top != truth
        # a check without the 1 / (1 - L) factor, for comparison: it is fooled
        lip = verifier.lipschitz
        residual = (y - z.double()).norm(dim=1)
        out = exact.readout(y)
        naive_margin = out.gather(1, top[:, None]) - out
        naive_ok = (
            (naive_margin > verifier.margin_lipschitz[top] * lip * residual[:, None])
            | (torch.arange(4) == top[:, None])
        ).all(dim=1)
    assert bool(ok.any()), "nothing verified: the test would be vacuous"
    assert bool(wrong.any()), "no wrong candidate: the test would be vacuous"
    assert not bool((ok & wrong).any())
    if adversarial:
        assert bool((naive_ok & wrong).any()), "the candidates are not close calls"


def test_check_uses_float64_and_never_touches_the_model() -> None:
    torch.manual_seed(0)
    model = create_model("contractive-convdeq", image_size=8, channels=3, head_pool=2, groups=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    verifier = Verifier.for_model(model)
    assert verifier.model is not model
    assert all(p.dtype == torch.float64 for p in verifier.model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert 0 < verifier.lipschitz < 1


# -- undecided samples and batching -----------------------------------------------------------


def test_undecided_samples_vote_against_the_top_class() -> None:
    model, x = oracle(p_a=0.99)
    # one check from zeros: the bound c ||u|| always exceeds the margin, nothing is decided
    cert = verified(solver=None, max_steps=1, chain_start="zeros").certify(
        model, x, generator=gen(0)
    )
    assert cert.counts["undecided"] == cert.n and cert.counts["n_A"] == 0
    assert cert.prediction == ABSTAIN and cert.radius == 0.0
    assert cert.unconverged_fraction == 1.0
    pred = verified(solver=None, max_steps=1, chain_start="zeros").predict(
        model, x, generator=gen(0)
    )
    assert pred.prediction == ABSTAIN and pred.counts["undecided"] == pred.n


class RecordingSolver:
    """A naive solver that records the batch size of every call."""

    def __init__(self) -> None:
        self.inner = create_solver("naive", max_iter=1)
        self.sizes: list[int] = []

    def solve(self, f: Callable[[Tensor], Tensor], z0: Tensor) -> SolverResult:
        self.sizes.append(z0.shape[0])
        return self.inner.solve(f, z0)  # type: ignore[no-any-return]

    def describe(self) -> dict[str, Any]:
        return {"name": "recording"}


def test_only_undecided_samples_keep_stepping() -> None:
    model, x = oracle(p_a=0.8, contraction=0.95)
    solver = RecordingSolver()
    cert = verified(solver=solver, chain_start="anchor", n0=1, n=32, batch_size=32)
    result = cert.certify(model, x, generator=gen(3))
    estimation = solver.sizes[solver.sizes.index(32) :]  # selection's calls have size 1
    assert all(a >= b for a, b in zip(estimation, estimation[1:], strict=False))
    assert estimation[-1] < 32  # decided samples left the batch
    assert result.counts["undecided"] == 0
    # NFE: every sample pays one evaluation per solver call and per check it took part in
    assert result.extra["nfe"]["solver"] == sum(solver.sizes)


def test_predict_returns_the_true_class() -> None:
    model, x = oracle(p_a=0.99)
    pred = verified(n=200, alpha=0.01).predict(model, x, generator=gen(0))
    assert pred.prediction == 1 and pred.extra["sound"] is True
    assert pred.counts["n1"] + pred.counts["n2"] <= 200


# -- fallback ----------------------------------------------------------------------------------


def test_model_without_bound_is_refused() -> None:
    model, x = LinearOracle.with_p_a(0.9, SIGMA)
    with pytest.raises(NotContractiveError, match="no contraction bound") as info:
        verified().certify(model, x, generator=gen(0))
    assert isinstance(info.value, DeqcertError)


def test_fallback_to_vanilla() -> None:
    model, x = LinearOracle.with_p_a(0.9, SIGMA)
    cert = verified(fallback="vanilla").certify(model, x, generator=gen(4))
    reference = make_certifier("vanilla", solver=20, n0=10, n=100, batch_size=32).certify(
        model, x, generator=gen(4)
    )
    assert "vanilla" in cert.extra["fallback"] and cert.bound == "clopper-pearson"
    assert cert.counts == reference.counts and cert.radius == reference.radius
    pred = verified(fallback="vanilla").predict(model, x, generator=gen(4))
    assert "fallback" in pred.extra


class NotAContraction(ContractiveOracle):
    def contraction_bound(self) -> ContractionBound:
        return ContractionBound(1.0, "l2", "claimed")


class WrongNorm(ContractiveOracle):
    def contraction_bound(self) -> ContractionBound:
        return ContractionBound(0.5, "linf", "claimed")


@pytest.mark.parametrize("cls", [NotAContraction, WrongNorm])
def test_unusable_bounds_are_refused(cls: type[ContractiveOracle]) -> None:
    base, x = LinearOracle.with_p_a(0.9, SIGMA)
    model = cls(base.weight, base.bias, 0.9)
    with pytest.raises(NotContractiveError, match="L < 1"):
        verified().certify(model, x, generator=gen(0))


def test_real_model_end_to_end() -> None:
    torch.manual_seed(0)
    model = create_model("contractive-convdeq", image_size=8, channels=3, head_pool=2, groups=1)
    model.train()
    x = torch.rand(1, 8, 8, generator=gen(0))
    cert = verified(n=50, batch_size=20).certify(model, x, generator=gen(1))
    assert model.training  # mode restored
    assert sum(cert.extra["estimation_counts"]) + cert.counts["undecided"] == 50
    assert cert.nfe > 0 and 0 < cert.extra["lipschitz"] < 1
