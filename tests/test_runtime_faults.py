"""Issue 14, inputs and models at run time: bad API inputs are one line, broken models no votes.

* inputs through the API (dtype, device, range, generator): one-line ``DataError`` before any
  work, from every certifier's ``certify`` and ``predict``;
* NaN weights: refused before any work (``NonFiniteWeightsError``), verified's contraction
  bound included (no ``LinAlgError``);
* NaN/Inf logits or states for some or all noisy samples: never a vote (``argmax`` of NaN
  is class 0), and the certificate or prediction abstains with ``extra['abstain_reason']``;
* the CLI: such inputs and models are one line, exit 2, no file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _helpers import SIGMA, gen, make_certifier
from conftest import FAST
from torch import Tensor
from typer.testing import Result

from deqcert.certify.inputs import check_input
from deqcert.certify.sampling import finite_samples, votes
from deqcert.data.base import ImageDataset
from deqcert.errors import DataError, DeqcertError
from deqcert.models.check import NonFiniteWeightsError
from deqcert.options import ComponentOptions
from deqcert.registry import datasets
from deqcert.solvers import _progress
from deqcert.testing.oracles import ContractiveLinearOracle

CERTIFIERS = ["vanilla", "serialized", "verified"]
MODES = ["certify", "predict"]
SIZES = {"n0": 20, "n": 60, "batch_size": 20}


def certifier(name: str) -> Any:
    extra = {"reference_samples": 20} if name == "serialized" else {}
    return make_certifier(name, **SIZES, **extra)


def oracle() -> tuple[ContractiveLinearOracle, Tensor]:
    """A contractive model (every certifier accepts it) and an input in [0, 1] it certifies."""
    return ContractiveLinearOracle.with_p_a(0.99, SIGMA)


def run(name: str, mode: str, model: Any, x: Any, generator: Any = "default") -> Any:
    method = getattr(certifier(name), mode)
    return method(model, x, generator=gen(0) if generator == "default" else generator)


# -- inputs through the API -------------------------------------------------------------
BAD_INPUTS: dict[str, tuple[Callable[[Tensor], Any], Any, str]] = {
    # name: (make x from a good x, the generator, what the one line must say)
    "float64 input": (lambda x: x.double(), "default", r"x is float64 but the model's weights "
                      r"are float32; pass x\.to\(torch\.float32\)"),
    "float16 input": (lambda x: x.half(), "default", "x is float16"),
    "meta-device input": (lambda x: x.to("meta"), "default", "meta device"),
    "input times 1000": (lambda x: x * 1000, "default", r"values in \[500, 500\], outside the "
                         r"model's input range \[0, 1\]"),
    "input minus 5": (lambda x: x - 5, "default", "outside the model's input range"),
    "one pixel above 1": (lambda x: x.index_put_((torch.tensor([0]),) * 3, torch.tensor(1.01)),
                          "default", "outside the model's input range"),
    "generator None": (lambda x: x, None, "generator is None; pass a seeded torch.Generator"),
    "generator is an int seed": (lambda x: x, 0, "generator is int"),
    "generator is numpy's": (lambda x: x, np.random.default_rng(0),
                             r"generator is numpy\.random\..*Generator; pass a seeded torch"),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", CERTIFIERS)
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_a_bad_api_input_is_one_data_error_line(case: str, name: str, mode: str) -> None:
    make, generator, match = BAD_INPUTS[case]
    model, x = oracle()
    with pytest.raises(DataError, match=match) as info:
        run(name, mode, model, make(x.clone()), generator)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("input: ")


def test_inputs_must_have_the_model_dtype_and_a_weightless_model_takes_float32_or_64() -> None:
    model, x = oracle()
    model.double()  # a float64 model takes float64 inputs, and refuses float32 ones
    check_input(model, x.double(), gen())
    with pytest.raises(DataError, match="x is float32 but the model's weights are float64"):
        check_input(model, x, gen())
    weightless = object()
    for dtype in (torch.float32, torch.float64):
        check_input(weightless, torch.zeros(5, dtype=dtype))
    with pytest.raises(DataError, match="accepts float32 or float64"):
        check_input(weightless, torch.zeros(5, dtype=torch.bfloat16))


def test_an_input_on_another_device_than_the_model_is_refused() -> None:
    model, x = oracle()
    model.to("meta")  # a model on another device (meta stands in for a GPU here)
    with pytest.raises(DataError, match=r"x is on cpu but the model on meta; move x there"):
        check_input(model, x, gen())
    check_input(model, x, gen(), check_device=False)  # datasets are checked before moving


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", CERTIFIERS)
def test_cuda_input_with_a_cpu_generator_or_a_cpu_model_is_one_line(name: str) -> None:
    model, x = oracle()
    with pytest.raises(DataError, match="x is on cuda:0 but the model on cpu"):
        run(name, "certify", model, x.cuda())
    model.cuda()
    with pytest.raises(DataError, match="x is on cuda:0 but the generator on cpu"):
        run(name, "certify", model, x.cuda())
    with pytest.raises(DataError, match="x is on cpu but the model on cuda:0"):
        run(name, "predict", model, x, torch.Generator(device="cuda"))


@pytest.mark.parametrize("name", CERTIFIERS)
def test_input_range_opt_out_for_models_whose_inputs_are_not_images(name: str) -> None:
    model, x = oracle()
    shifted = x - 5  # the oracle is linear: the same score with the bias moved along
    model.bias += float(model.weight.sum()) * 5
    model.input_range = None  # type: ignore[attr-defined]
    assert run(name, "certify", model, shifted).prediction == 1
    model.input_range = (-5.0, 0.0)  # type: ignore[attr-defined]
    assert run(name, "certify", model, shifted).prediction == 1
    with pytest.raises(DataError, match=r"outside the model's input range \[-5, 0\]"):
        run(name, "certify", model, x)


@pytest.mark.parametrize("value", [(1.0, 0.0), (0.0, math.inf), "0-1", (0.0,), [0, 1, 2]])
def test_a_malformed_input_range_is_one_line(value: Any) -> None:
    model, x = oracle()
    model.input_range = value  # type: ignore[attr-defined]
    with pytest.raises(DataError, match=r"^model\.input_range is .*; it must be None") as info:
        check_input(model, x, gen())
    assert "\n" not in str(info.value)


# -- NaN weights ------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", CERTIFIERS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_model_with_a_non_finite_weight_is_refused_before_any_work(
    name: str, mode: str, value: float
) -> None:
    model, x = oracle()
    model.weight[0, 1, 2] = value
    with pytest.raises(NonFiniteWeightsError, match=(
        r"^cannot certify ContractiveLinearOracle: weight 'weight' holds 1 NaN or infinite "
        r"value\(s\); the weights of a model must be finite$"
    )):
        run(name, mode, model, x)


def test_verified_model_check_of_a_contractive_network_with_nan_weights_is_one_line() -> None:
    from deqcert import create_model

    torch.manual_seed(0)
    model = create_model("contractive-convdeq", image_size=8, channels=3, head_pool=2, groups=1)
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "recurrent" in n).view(-1)[0] = math.nan
    verified = certifier("verified")
    with pytest.raises(NonFiniteWeightsError, match="recurrent"):
        verified.check_model(model)  # the pipeline's check; before: a LinAlgError from svdvals


def test_a_contraction_bound_that_fails_in_linear_algebra_is_a_deqcert_error() -> None:
    from deqcert.certify.verifier import NotContractiveError

    class Failing(ContractiveLinearOracle):
        def contraction_bound(self) -> Any:
            raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge")

    model, x = oracle()
    model.__class__ = Failing
    with pytest.raises(NotContractiveError, match="could not be computed .linalg.svd"):
        run("verified", "certify", model, x)
    fallback = make_certifier("verified", fallback="vanilla", **SIZES)
    assert "fallback" in fallback.certify(model, x, generator=gen()).extra


# -- non-finite logits or states at run time -----------------------------------------------
class Flaky(ContractiveLinearOracle):
    """The oracle, broken for noisy inputs whose first pixel is above ``threshold``.

    ``where='logits'``: those samples' logits are NaN (their state is fine);
    ``where='state'``: their state is NaN and the logits are NaN-free (``nan_to_num``),
    so only a check of the state catches them; ``where='inf'``: +Inf logits for the
    top class, which ``argmax`` would happily read as a confident vote.
    """

    where = "logits"
    threshold = 0.5

    def inject(self, x: Tensor) -> Tensor:
        flag = (x.flatten(1)[:, 0] > self.threshold).to(x.dtype)
        return torch.cat([super().inject(x), flag[:, None]], dim=1)

    def f(self, z: Tensor, u: Tensor) -> Tensor:
        out = super().f(z, u)
        if self.where == "state":
            out = torch.where(u[:, 2:] > 0.5, math.nan, out)
        return out

    def readout(self, z: Tensor) -> Tensor:
        logits = z[:, :2]
        if self.where == "state":
            return torch.nan_to_num(logits)
        bad = math.nan if self.where == "logits" else math.inf
        return torch.where(z[:, 2:] > 0, torch.tensor([0.0, bad], dtype=z.dtype), logits)


def flaky(where: str, share: str) -> tuple[Flaky, Tensor]:
    model, x = oracle()
    model.__class__ = Flaky
    assert isinstance(model, Flaky)
    model.where = where
    model.threshold = {"some": 0.5, "all": -math.inf}[share]
    return model, x


REASON = re.compile(r"^non-finite logits or states in (\d+) of (\d+) noisy solves; they are "
                    r"no votes and nothing is certified$")


def _reason(extra: dict[str, Any]) -> tuple[int, int]:
    match = REASON.match(extra.get("abstain_reason", ""))
    assert match, extra.get("abstain_reason")
    return int(match.group(1)), int(match.group(2))


@pytest.mark.parametrize("share", ["some", "all"])
@pytest.mark.parametrize("where", ["logits", "state", "inf"])
@pytest.mark.parametrize("name", CERTIFIERS)
def test_non_finite_samples_are_no_votes_and_the_certificate_abstains(
    name: str, where: str, share: str
) -> None:
    model, x = flaky(where, share)
    cert = run(name, "certify", model, x)
    assert cert.prediction == -1 and cert.radius == 0.0 and not cert.at_cap
    bad, total = _reason(cert.extra)
    if share == "all":
        assert bad == total
    elif name == "serialized":  # a chain carries a broken state on to its next samples
        assert 0.2 * total < bad < total
    else:  # about half of the noisy inputs have their first pixel above 0.5
        assert 0.2 * total < bad < 0.8 * total
    if name == "serialized":
        assert total == SIZES["n0"] + SIZES["n"] + 20  # chains, then the K reference solves
    else:
        votes = sum(cert.extra["selection_counts"]) + sum(cert.extra["estimation_counts"])
        assert total == SIZES["n0"] + SIZES["n"]
        assert votes == total - bad  # the broken samples were never counted for any class
    if share == "all" and name != "serialized":
        assert cert.extra["selection_counts"] == [0, 0]  # not class 0 (argmax of NaN)
        assert cert.counts["n_A"] == 0
    if share == "all" and name == "serialized":
        assert cert.counts["C_m"] == 0 and cert.counts["reference_A"] == 0


@pytest.mark.parametrize("share", ["some", "all"])
@pytest.mark.parametrize("where", ["logits", "state", "inf"])
@pytest.mark.parametrize("name", CERTIFIERS)
def test_non_finite_samples_are_no_votes_and_the_prediction_abstains(
    name: str, where: str, share: str
) -> None:
    model, x = flaky(where, share)
    prediction = run(name, "predict", model, x)
    assert prediction.prediction == -1
    bad, total = _reason(prediction.extra)
    assert total == SIZES["n"] and (bad == total if share == "all" else 0 < bad < total)
    assert sum(prediction.extra["class_counts"]) == total - bad


@pytest.mark.parametrize("shortcuts", [True, False])  # False: the CUDA path, run on the CPU
def test_finite_samples_is_exact_on_both_paths(
    monkeypatch: pytest.MonkeyPatch, shortcuts: bool
) -> None:
    """The row-sum shortcut never changes the answer: an overflowing finite row is a vote."""
    monkeypatch.setattr(_progress, "SHORTCUTS", shortcuts)
    logits = torch.tensor([[0.0, 1.0]] * 6)
    z = torch.zeros(6, 3, 4)
    z[1] = 3e38  # finite, but its float32 sum overflows
    z[2, 0, 1] = math.nan
    z[3, 2, 3] = math.inf
    logits[4, 0] = -math.inf
    z[5, 0, 0], z[5, 1, 0] = math.inf, -math.inf  # their sum is NaN
    expected = [True, True, False, False, False, False]
    assert finite_samples(logits, z).tolist() == expected
    assert votes(logits, z).tolist() == [1, 1, -1, -1, -1, -1]
    assert finite_samples(logits[:2], z[:2]).tolist() == [True, True]
    assert finite_samples(logits[:1], z[:1]).tolist() == [True]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", CERTIFIERS)
def test_without_faults_the_model_certifies_and_records_no_reason(name: str, mode: str) -> None:
    model, x = flaky("logits", "some")
    model.threshold = math.inf  # no sample is broken: the control of the tests above
    outcome = run(name, mode, model, x)
    assert outcome.prediction == 1
    assert "abstain_reason" not in outcome.extra


# -- the CLI ----------------------------------------------------------------------------------
class OddImages(ImageDataset):
    """Four 28x28 images, all 0.5 except as ``kind`` says for the third."""

    class Options(ComponentOptions):
        """The fault of the third image."""

        kind: str = "range"

    num_classes = 10
    input_shape = (1, 28, 28)

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        x = torch.full(self.input_shape, 0.5)
        if index == 2 and self.options.kind == "range":
            x *= 255.0  # not scaled to [0, 1]
        if index == 2 and self.options.kind == "float64":
            x = x.double()
        return x, index


@pytest.fixture
def odd_images() -> Any:
    datasets.register("odd-images", OddImages, override=True)
    yield
    datasets.unregister("odd-images")


NAN_FACTORY = '''
import math, sys
sys.path.insert(0, {tests!r})
import torch, user_models

def build():
    model = user_models.build()
    with torch.no_grad():
        model.module.head.weight[3, 5] = math.nan
    return model
'''


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize(
    ("case", "word"),
    [
        ("image outside [0, 1]", "outside the model's input range [0, 1]"),
        ("float64 image", "x is float64 but the model's weights are float32"),
        ("model with a NaN weight (--model factory)", "weight 'module.head.weight' holds 1 NaN"),
    ],
)
def test_cli_bad_input_or_broken_model_is_one_line_exit_2_and_no_file(
    case: str,
    word: str,
    odd_images: None,
    tiny_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cli: Callable[..., Result],
) -> None:
    monkeypatch.chdir(tmp_path)
    if case.startswith("model"):
        factory = tmp_path / "nan_model.py"
        factory.write_text(NAN_FACTORY.format(tests=str(Path(__file__).parent)))
        source = ["--model", f"{factory}:build", "--sigma", "0.25"]
    else:
        kind = "range" if "outside" in case else "float64"
        source = ["--checkpoint", str(tiny_checkpoint), "--dataset", "odd-images",
                  "--set", f"dataset.kind={kind}"]
    before = _snapshot(tmp_path)
    result = cli(["certify", *source, *FAST, "--indices", "0-3", "--out", "out.jsonl"])
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("deqcert: error: "), result.stderr
    assert word in lines[0], lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert _snapshot(tmp_path) == before


def test_check_input_errors_are_deqcert_errors() -> None:
    assert issubclass(DataError, DeqcertError) and issubclass(NonFiniteWeightsError, DeqcertError)
