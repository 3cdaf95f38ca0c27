"""certify_dataset: records, per-index seeding, order independence and input checks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from _helpers import SIGMA, make_certifier
from torch import Tensor

from deqcert import DataError, OptionError
from deqcert.certify.dataset import certify_dataset, noise_generator, noise_seed
from deqcert.testing.oracles import LinearOracle

KEYS = {
    "index",
    "label",
    "prediction",
    "radius",
    "correct",
    "p_lower",
    "counts",
    "nfe",
    "seconds",
    "bound",
    "sound",
    "certificate",
    "mode",
    "seed",
}


@pytest.fixture
def setup() -> tuple[LinearOracle, list[tuple[Tensor, int]]]:
    model, x = LinearOracle.with_p_a(0.8, SIGMA)
    # inputs at different distances from the boundary, labelled with h_ref's class
    dataset = [
        (x + shift * model.weight, 1 if shift > -0.4 else 0)
        for shift in (0.0, -0.3, 0.2, -0.8, 0.5)
    ]
    return model, dataset


def certifier(name: str = "vanilla") -> Any:
    serialized = {"reference_samples": 20, "solver": 1} if name == "serialized" else {}
    return make_certifier(name, n0=5, n=60, batch_size=16, **serialized)


def strip(record: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in record.items() if k != "seconds"}
    out["certificate"] = {k: v for k, v in record["certificate"].items() if k != "seconds"}
    return out


def test_noise_seed_is_the_documented_function() -> None:
    words = [7, 0, 12, 0]  # (seed, index) as fixed-width 32-bit words
    expected = int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0]) & (2**63 - 1)
    assert noise_seed(7, 12) == expected
    # SeedSequence([seed, index]) itself is not injective: [2**32, 0] and [0, 1] collide
    assert noise_seed(2**32, 0) != noise_seed(0, 1)
    seeds = {noise_seed(s, i) for s in range(3) for i in range(100)}
    assert len(seeds) == 300 and all(0 <= s < 2**63 for s in seeds)
    with pytest.raises(OptionError):
        noise_seed(-1, 0)
    with pytest.raises(OptionError, match="2\\*\\*64"):
        noise_seed(0, 2**64)


def test_cpu_manual_seed_keeps_only_32_bits() -> None:
    """Why noise_generator exists: torch's CPU generator collides seeds s and s + 2**32."""
    a = torch.randn(8, generator=torch.Generator().manual_seed(12345))
    b = torch.randn(8, generator=torch.Generator().manual_seed(12345 + 2**32))
    assert torch.equal(a, b)


@pytest.mark.parametrize("seed", [0, 12345, 2**40])
def test_noise_generator_streams_do_not_collide(seed: int) -> None:
    """Seeds s and s + 2**32 (and neighbouring indices) give unrelated, reproducible noise."""
    draws = {}
    for s, i in [(seed, 0), (seed + 2**32, 0), (seed, 1), (seed + 1, 0)]:
        draws[s, i] = torch.randn(8, generator=noise_generator(s, i))
        assert torch.equal(draws[s, i], torch.randn(8, generator=noise_generator(s, i)))
    values = list(draws.values())
    assert all(not torch.equal(a, b) for k, a in enumerate(values) for b in values[k + 1 :])
    assert noise_generator(seed, 3).initial_seed() == noise_seed(seed, 3)


def test_noise_generator_first_draws_are_distinct_over_many_inputs() -> None:
    """6,000 (seed, index) pairs, including seeds 2**32 apart: all first 64-bit draws differ."""
    pairs = [(s, i) for s in (0, 1, 2**32, 2**32 + 1) for i in range(1500)]
    first = {int(torch.randint(0, 2**62, (1,), generator=noise_generator(s, i))) for s, i in pairs}
    assert len(first) == len(pairs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_noise_generator_on_cuda_uses_the_full_seed() -> None:
    a = torch.randn(8, device="cuda", generator=noise_generator(7, 0, "cuda"))
    b = torch.randn(8, device="cuda", generator=noise_generator(7 + 2**32, 0, "cuda"))
    assert not torch.equal(a, b)
    assert noise_generator(7, 0, "cuda").initial_seed() == noise_seed(7, 0)


@pytest.mark.parametrize("name", ["vanilla", "serialized"])
def test_records_are_complete_and_order_free(name: str, setup: Any) -> None:
    model, dataset = setup
    forward = list(certify_dataset(certifier(name), model, dataset, [0, 1, 2, 3, 4], seed=3))
    backward = list(certify_dataset(certifier(name), model, dataset, [4, 2], seed=3))
    assert [r["index"] for r in forward] == [0, 1, 2, 3, 4]
    for record in forward:
        assert KEYS <= set(record)
        assert record["mode"] == "certify" and record["seed"] == 3
        assert record["correct"] == (record["prediction"] == record["label"])
        assert record["certificate"]["prediction"] == record["prediction"]
    by_index = {r["index"]: strip(r) for r in forward}
    assert [strip(r) for r in backward] == [by_index[4], by_index[2]]
    other_seed = next(certify_dataset(certifier(name), model, dataset, [0], seed=4))
    assert strip(other_seed)["counts"] != by_index[0]["counts"]


def test_index_seed_drives_the_generator(setup: Any) -> None:
    model, dataset = setup
    record = next(certify_dataset(certifier(), model, dataset, [2], seed=5))
    direct = certifier().certify(
        model, dataset[2][0], generator=noise_generator(5, 2)
    )
    assert record["certificate"]["counts"] == direct.counts
    assert record["p_lower"] == direct.p_lower


def test_predict_mode(setup: Any) -> None:
    model, dataset = setup
    records = list(certify_dataset(certifier(), model, dataset, [0, 3], mode="predict"))
    assert [r["mode"] for r in records] == ["predict", "predict"]
    assert all(r["radius"] is None and 0 <= r["p_value"] <= 1 for r in records)
    assert records[0]["prediction"] == 1 and records[0]["correct"]


@pytest.mark.parametrize(
    ("item", "match"),
    [
        ((torch.full((1, 4, 4), float("nan")), 0), "index 0: x contains NaN"),
        ((torch.full((1, 4, 4), float("inf")), 0), "index 0: x contains NaN or infinite"),
        ((torch.zeros(4, 4), 0), r"index 0: expected x of shape \(1, 4, 4\), got \(4, 4\)"),
        ((torch.zeros(1, 5, 4), 0), r"expected x of shape \(1, 4, 4\)"),
        ((torch.zeros(1, 4, 4, dtype=torch.long), 0), "float tensor"),
        (torch.zeros(1, 4, 4), "pair"),
    ],
)
def test_bad_inputs_raise_one_line_data_errors(item: Any, match: str, setup: Any) -> None:
    model, _ = setup
    with pytest.raises(DataError, match=match) as info:
        list(certify_dataset(certifier(), model, [item], [0]))
    assert "\n" not in str(info.value)


def test_bad_index_and_mode(setup: Any) -> None:
    model, dataset = setup
    with pytest.raises(DataError, match="out of range"):
        list(certify_dataset(certifier(), model, dataset, [5]))
    with pytest.raises(OptionError, match="mode"):
        certify_dataset(certifier(), model, dataset, [0], mode="attack")  # type: ignore[arg-type]
