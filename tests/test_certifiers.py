"""Vanilla and serialized certifiers: contract, bookkeeping and the SRS sampling rules."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from _helpers import NOISE, SIGMA, gen, make_certifier
from torch import Tensor

from deqcert import (
    ABSTAIN,
    DataError,
    OptionError,
    UnknownNameError,
    create_certifier,
    create_model,
    create_solver,
    list_certifiers,
)
from deqcert.certify import bounds
from deqcert.protocols import Certificate, Certifier, Prediction, SolverResult
from deqcert.testing.oracles import LinearOracle


class RecordingSolver:
    """Wraps a solver and records every call's starting state and result."""

    def __init__(self, name: str, **options: Any) -> None:
        self.inner = create_solver(name, **options)
        self.calls: list[tuple[Tensor, SolverResult]] = []

    def solve(self, f: Callable[[Tensor], Tensor], z0: Tensor) -> SolverResult:
        result = self.inner.solve(f, z0)
        self.calls.append((z0.clone(), result))
        return result

    def describe(self) -> dict[str, Any]:
        return dict(self.inner.describe())


class ModeSpy(LinearOracle):
    """An oracle that records, in ``f``, whether inference mode was on and its training flag."""

    seen: list[tuple[bool, bool]]

    def f(self, z: Tensor, u: Tensor) -> Tensor:
        self.seen.append((torch.is_inference_mode_enabled(), self.training))
        return super().f(z, u)


def srs(**options: Any) -> Certifier:
    steps = {"solver": 1, "warmup_solver": 4, "reference_solver": 5}
    sizes = {"reference_samples": 20, "n0": 7, "n": 53, "batch_size": 10}
    start = {"chain_start": "warmup"}  # these tests were written for the paper's start
    return make_certifier("serialized", **{**steps, **sizes, **start, **options})


def vanilla(**options: Any) -> Certifier:
    return make_certifier("vanilla", **{"solver": 3, "n0": 7, "n": 53, "batch_size": 10, **options})


@pytest.fixture
def oracle() -> tuple[LinearOracle, Tensor]:
    return LinearOracle.with_p_a(0.8, SIGMA)


def without_time(record: Certificate | Prediction) -> dict[str, Any]:
    out = record.to_dict()
    out.pop("seconds")
    return out


# --- construction ---------------------------------------------------------------------


def test_registered() -> None:
    assert {"vanilla", "serialized"} <= set(list_certifiers())


def test_defaults_follow_the_contract() -> None:
    v = create_certifier("vanilla", noise=NOISE).describe()
    assert (v["n0"], v["n"], v["alpha"], v["batch_size"]) == (100, 10_000, 0.001, 400)
    assert (v["solver"]["name"], v["solver"]["max_iter"], v["solver"]["tol"]) == (
        "anderson",
        30,
        1e-3,
    )
    s = create_certifier("serialized", noise=NOISE).describe()
    assert (s["bound"], s["chain_start"], s["reference_samples"]) == ("sound", "anchor", 400)
    assert s["solver"]["max_iter"] == 1 and s["warmup_solver"]["max_iter"] == 10
    assert s["reference_solver"]["max_iter"] == 30 and s["sound"] is True


def test_components_as_objects_or_specs() -> None:
    noise = create_certifier("vanilla", noise=NOISE).options.noise
    by_object = create_certifier("vanilla", noise=noise, solver=create_solver("naive"))
    by_spec = create_certifier("vanilla", noise=NOISE, solver={"name": "naive"})
    assert by_object.describe() == by_spec.describe()


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("vanilla", {"noise": NOISE, "typo": 1}, "unknown option 'typo'"),
        ("vanilla", {}, "noise"),
        ("vanilla", {"noise": NOISE, "n": 0}, "'n'"),
        ("vanilla", {"noise": NOISE, "alpha": 1.5}, "alpha"),
        ("vanilla", {"noise": 3}, "noise"),
        ("serialized", {"noise": NOISE, "bound": "magic"}, "bound"),
        ("serialized", {"noise": NOISE, "chain_start": "zeros"}, "chain_start"),
        ("serialized", {"noise": NOISE, "n": 100, "reference_samples": 101}, "must not exceed"),
        ("serialized", {"noise": NOISE, "alpha_split": 1.0}, "alpha_split"),
    ],
)
def test_bad_options_are_rejected(name: str, options: dict[str, Any], match: str) -> None:
    with pytest.raises(OptionError, match=match):
        create_certifier(name, **options)


def test_unknown_component_name_is_reported() -> None:
    with pytest.raises(UnknownNameError, match="gaussian"):
        create_certifier("vanilla", noise={"name": "gausian", "sigma": 1})


# --- inputs ---------------------------------------------------------------------------


@pytest.mark.parametrize("make", [vanilla, srs])
def test_bad_inputs_raise_data_error(make: Callable[..., Certifier], oracle: Any) -> None:
    model, x = oracle
    certifier = make()
    bad_value = x.clone()
    bad_value[0, 0, 0] = float("nan")
    for bad in (bad_value, x[0], x.long()):
        with pytest.raises(DataError):
            certifier.certify(model, bad, generator=gen())
    with pytest.raises(DataError, match="inf"):
        certifier.predict(model, x.clone().fill_(math.inf), generator=gen())


# --- vanilla --------------------------------------------------------------------------


def test_vanilla_certificate_is_complete(oracle: Any) -> None:
    model, x = oracle
    cert = vanilla().certify(model, x, generator=gen())
    assert cert.prediction == 1 and cert.radius > 0
    assert cert.radius == pytest.approx(
        SIGMA
        * float(
            torch.distributions.Normal(0, 1).icdf(torch.tensor(cert.p_lower, dtype=torch.float64))
        )
    )
    assert sum(cert.extra["selection_counts"]) == 7 and sum(cert.extra["estimation_counts"]) == 53
    assert cert.counts["n_A"] == cert.extra["estimation_counts"][1]
    assert cert.nfe == 3 * (7 + 53)  # naive, 3 steps, tolerance never met
    assert cert.unconverged_fraction == 1.0
    assert (cert.n0, cert.n, cert.alpha, cert.bound, cert.sound) == (
        7,
        53,
        0.1,
        "clopper-pearson",
        True,
    )
    assert cert.noise == {"name": "gaussian", "sigma": SIGMA, "norm": "l2"} and cert.norm == "l2"
    assert cert.solvers["solver"]["name"] == "naive" and cert.seconds > 0


@pytest.mark.parametrize(
    ("name", "options"), [("laplace", {"scale": 0.2}), ("uniform", {"half_width": 0.3})]
)
def test_l1_noise_gives_l1_certificates(name: str, options: dict[str, Any], oracle: Any) -> None:
    model, x = oracle
    certifier = vanilla(noise={"name": name, **options}, n=200)
    cert = certifier.certify(model, x, generator=gen())
    assert cert.norm == "l1" and cert.noise["name"] == name
    assert cert.prediction == 1
    assert cert.radius == certifier.options.noise.radius(cert.p_lower) > 0  # type: ignore[attr-defined]


def test_abstain_unless_p_lower_exceeds_one_half() -> None:
    from deqcert.certify.base import decide
    from deqcert.noise import GaussianNoise

    noise = GaussianNoise(sigma=SIGMA)
    assert decide(1, 0.5, noise) == (ABSTAIN, 0.0)
    assert decide(1, 0.3, noise) == (ABSTAIN, 0.0)
    prediction, radius = decide(1, 0.9, noise)
    assert prediction == 1 and radius == noise.radius(0.9) > 0


def test_vanilla_abstains_near_the_boundary() -> None:
    model, x = LinearOracle.with_p_a(0.5 + 1e-6, SIGMA)
    cert = vanilla(n=200).certify(model, x, generator=gen())
    assert cert.prediction == ABSTAIN and cert.radius == 0.0 and cert.p_lower < 0.5
    pred = vanilla(n=200).predict(model, x, generator=gen())
    assert pred.prediction == ABSTAIN and pred.p_value > 0.1


def test_vanilla_predict(oracle: Any) -> None:
    model, x = oracle
    pred = vanilla(n=100).predict(model, x, generator=gen())
    assert pred.prediction == 1 and pred.p_value <= 0.1
    assert pred.counts["n1"] + pred.counts["n2"] == 100 and pred.extra["sound"] is True
    assert pred.nfe == 300


@pytest.mark.parametrize("make", [vanilla, srs])
def test_same_seed_same_result(make: Callable[..., Certifier], oracle: Any) -> None:
    model, x = oracle
    certifier = make()
    a = certifier.certify(model, x, generator=gen(3))
    b = certifier.certify(model, x, generator=gen(3))
    c = certifier.certify(model, x, generator=gen(4))
    assert without_time(a) == without_time(b)
    assert without_time(a)["counts"] != without_time(c)["counts"]


@pytest.mark.parametrize("make", [vanilla, srs])
def test_runs_in_inference_and_eval_mode(make: Callable[..., Certifier]) -> None:
    base, x = LinearOracle.with_p_a(0.8, SIGMA)
    model = ModeSpy(base.weight, base.bias, base.contraction)
    model.seen = []
    model.train()
    make().certify(model, x, generator=gen())
    make().predict(model, x, generator=gen())
    assert model.seen and all(inference and not training for inference, training in model.seen)
    assert model.training  # restored


# --- serialized: bookkeeping ----------------------------------------------------------


def test_serialized_certificate_is_complete(oracle: Any) -> None:
    model, x = oracle
    cert = srs().certify(model, x, generator=gen())
    counts = cert.counts
    expected = {"C_m", "d", "K", "N1", "N2", "reference_A", "selection_A", "selection_n", "e"}
    assert set(counts) >= expected and counts["selection_n"] == 7
    assert counts["K"] == 20 and 0 <= counts["d"] <= counts["N2"] <= counts["K"]
    assert counts["N1"] + counts["d"] == counts["N2"]
    assert counts["e"] == counts["reference_A"] - counts["N1"] >= 0
    branch = cert.extra["branch"]
    assert branch in bounds.BRANCHES and ("D_up" in counts) == (branch != "reference")
    assert sum(cert.alpha_split.values()) == pytest.approx(0.1)  # the whole alpha, recorded
    assert cert.bound == "sound" and cert.sound and cert.extra["bound_note"].startswith("sound")
    assert set(cert.solvers) == {"solver", "warmup_solver", "reference_solver"}
    solves = cert.extra["solves"]
    # n0 = 7 and n = 53 with 10 chains: each stage's first batch is the warm-up
    assert solves["warmup"]["samples"] == 7 + 10
    assert solves["chains"]["samples"] == 53 - 10
    assert solves["reference"]["samples"] == 20
    assert cert.extra["nfe"] == {"warmup": 4 * 17, "chains": 43, "reference": 5 * 20, "anchor": 0}
    assert cert.nfe == sum(cert.extra["nfe"].values())
    # unconverged_fraction is the reference solves' share (h_ref), not the chains'
    assert cert.unconverged_fraction == solves["reference"]["unconverged_fraction"]
    assert cert.health["reference_unconverged"] == cert.unconverged_fraction
    assert solves["chains"]["unconverged"] == 43  # one naive step never meets the tolerance
    unconverged = solves["warmup"]["unconverged"] + solves["chains"]["unconverged"]
    assert cert.health["chain_unconverged"] == pytest.approx(unconverged / 60)


@pytest.mark.parametrize("n0", [7, 40])
def test_serialized_bound_matches_bounds_module(oracle: Any, n0: int) -> None:
    model, x = oracle
    cert = srs(n=200, n0=n0, reference_samples=50).certify(model, x, generator=gen(1))
    c = cert.counts
    branch = bounds.select_branch(c["selection_A"], n0, 200, 50, 0.1)
    e = c["reference_A"] - c["N1"]
    expected = bounds.branch_lower(branch, c["C_m"], c["d"], e, c["reference_A"], 200, 50, 0.1)
    assert (cert.p_lower, cert.extra["branch"]) == (expected.p_lower, branch)
    assert cert.alpha_split == expected.alpha_split


def test_sound_v1_is_the_old_bound(oracle: Any) -> None:
    model, x = oracle
    cert = srs(n=200, reference_samples=50, bound="sound-v1").certify(model, x, generator=gen(1))
    c = cert.counts
    expected = bounds.sound_serialized_lower(c["C_m"], c["d"], 200, 50, 0.05, 0.05)
    assert (cert.p_lower, c["D_up"]) == (expected.p_lower, expected.d_up)
    assert cert.sound
    assert cert.alpha_split == pytest.approx({"mismatch": 0.05, "clopper_pearson": 0.05})


@pytest.mark.parametrize("bound", ["paper", "repro"])
def test_other_bounds_are_labelled(bound: str, oracle: Any) -> None:
    model, x = oracle
    certifier = srs(bound=bound)
    cert = certifier.certify(model, x, generator=gen())
    assert cert.bound == bound and cert.sound is False
    assert {"p_m_up", "N_E"} <= set(cert.extra) and "D_up" not in cert.counts
    assert certifier.describe()["sound"] is False
    if bound == "repro":
        assert "UNSOUND" in cert.extra["bound_note"]
        assert "UNSOUND" in certifier.describe()["bound_note"]


def test_serialized_predict_is_marked_heuristic(oracle: Any) -> None:
    model, x = oracle
    pred = srs(n=100).predict(model, x, generator=gen())
    assert pred.prediction == 1 and pred.extra["sound"] is False
    assert "heuristic" in pred.extra["note"]
    assert pred.counts["n1"] + pred.counts["n2"] == 100


# --- serialized: the sampling rules --------------------------------------------------


def test_reference_solves_are_zero_started_and_batched(oracle: Any) -> None:
    model, x = oracle
    for chain_start in ("warmup", "anchor", "carry"):
        reference = RecordingSolver("naive", max_iter=5)
        cert = srs(
            reference_solver=reference, chain_start=chain_start, reference_samples=25
        ).certify(model, x, generator=gen())
        calls = reference.calls[1:] if chain_start == "anchor" else reference.calls
        assert [z0.shape[0] for z0, _ in calls] == [10, 10, 5]  # K = 25 in batches of 10
        assert all(bool((z0 == 0).all()) for z0, _ in calls)  # init_state, never warm
        assert cert.extra["solves"]["reference"]["samples"] == 25


def test_reference_uses_the_same_noise_as_the_chains(oracle: Any) -> None:
    """With exact per-sample solves, serialized and reference votes agree on every index of S."""
    model, x = oracle
    exact = {"name": "anderson", "max_iter": 30, "tol": 1e-6}
    for seed in range(5):
        c = srs(solver=exact, n=200, reference_samples=60).certify(model, x, generator=gen(seed))
        counts = c.counts
        assert counts["d"] == 0 and counts["N1"] == counts["N2"] == counts["reference_A"]


def recorded_srs(
    oracle: Any, chain_start: str, **steps: int
) -> tuple[Certificate, dict[str, RecordingSolver]]:
    """Certify with ``srs`` and naive solvers that record their calls; return them by role.

    ``solver`` takes one step, the other roles given in ``steps`` that many.
    """
    model, x = oracle
    steps = {"solver": 1, **steps}
    solvers = {role: RecordingSolver("naive", max_iter=k) for role, k in steps.items()}
    cert = srs(**solvers, chain_start=chain_start).certify(model, x, generator=gen())
    return cert, solvers


def test_each_sample_starts_from_its_chain(oracle: Any) -> None:
    _, solvers = recorded_srs(oracle, "warmup")  # n0 = 7, n = 53, 10 chains
    # estimation: warm-up batch (not recorded here), then 4 full batches and one of 3 rows
    calls = solvers["solver"].calls
    assert [z0.shape[0] for z0, _ in calls] == [10, 10, 10, 10, 3]
    for (_, previous), (z0, _) in zip(calls, calls[1:], strict=False):
        assert torch.equal(z0, previous.z[: z0.shape[0]])


def test_carry_continues_the_selection_chains(oracle: Any) -> None:
    cert, solvers = recorded_srs(oracle, "carry", warmup_solver=4)
    warmup, chain = solvers["warmup_solver"], solvers["solver"]
    assert len(warmup.calls) == 1 and warmup.calls[0][0].shape[0] == 7  # selection only
    selection_end = warmup.calls[0][1].z
    first_estimation = chain.calls[0][0]
    assert torch.equal(first_estimation, selection_end[torch.arange(10) % 7])  # 7 chains tiled
    assert cert.extra["solves"]["warmup"]["samples"] == 7
    assert cert.extra["solves"]["chains"]["samples"] == 53


def test_anchor_starts_from_the_clean_fixed_point(oracle: Any) -> None:
    cert, solvers = recorded_srs(oracle, "anchor", reference_solver=5)
    reference, chain = solvers["reference_solver"], solvers["solver"]
    anchor_z0, anchor = reference.calls[0]
    assert anchor_z0.shape[0] == 1 and bool((anchor_z0 == 0).all())
    # both stages' first batches start from the anchor
    assert torch.equal(chain.calls[0][0], anchor.z.expand(7, -1))
    assert torch.equal(chain.calls[1][0], anchor.z.expand(10, -1))
    assert cert.extra["solves"]["anchor"]["samples"] == 1
    assert cert.extra["solves"]["warmup"]["samples"] == 0
    assert cert.extra["nfe"]["anchor"] == 5
    assert "warmup_solver" not in cert.solvers


def test_reference_subset_is_uniform(oracle: Any) -> None:
    """Every estimation index is equally likely to be in S (chi-square over many draws)."""
    from scipy import stats

    certifier = srs(n=20, reference_samples=5)
    hits = torch.zeros(20)
    for seed in range(400):
        subset = certifier._reference_subset(gen(seed)).indices  # type: ignore[attr-defined]
        assert subset.numel() == 5 and subset.unique().numel() == 5
        hits[subset] += 1
    assert stats.chisquare(hits.numpy()).pvalue > 1e-3


# --- real models ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vanilla", "serialized"])
def test_tiny_mlp_deq(name: str) -> None:
    torch.manual_seed(0)
    model = create_model("mlpdeq", in_channels=1, image_size=8, num_classes=3, hidden=16)
    x = torch.rand(1, 8, 8)
    options: dict[str, Any] = {"noise": NOISE, "n0": 10, "n": 30, "batch_size": 16}
    if name == "serialized":
        options["reference_samples"] = 10
    certifier = create_certifier(name, **options)
    cert = certifier.certify(model, x, generator=gen())
    assert cert.prediction in (ABSTAIN, 0, 1, 2) and cert.nfe > 0
    assert certifier.predict(model, x, generator=gen()).n == 30
