"""certify_dataset: records, per-index seeding, order independence and input checks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from _helpers import SIGMA, make_certifier
from torch import Tensor

from deqcert import DataError, OptionError
from deqcert.certify.dataset import certify_dataset, noise_seed
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
    expected = int(np.random.SeedSequence([7, 12]).generate_state(1, np.uint64)[0]) & (2**63 - 1)
    assert noise_seed(7, 12) == expected
    seeds = {noise_seed(s, i) for s in range(3) for i in range(100)}
    assert len(seeds) == 300 and all(0 <= s < 2**63 for s in seeds)
    with pytest.raises(OptionError):
        noise_seed(-1, 0)


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
        model, dataset[2][0], generator=torch.Generator().manual_seed(noise_seed(5, 2))
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
