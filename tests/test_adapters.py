"""Certifying a user's own DEQ: the protocol check, deqcert.adapt, list states, TorchDEQ,
``--model``/``--weights``, ``convert`` and the solver guard."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import Result

import deqcert
from deqcert.adapters import Layout
from deqcert.adapters.factory import convert, load_state
from deqcert.certify.sampling import noisy_batch
from deqcert.errors import DataError, DeqcertError
from deqcert.models.check import ModelProtocolError, check_model
from deqcert.run import guards

sys.path.insert(0, str(Path(__file__).parent))
import user_models  # noqa: E402

USER_MODELS = Path(__file__).parent / "user_models.py"
NOISE = {"name": "gaussian", "sigma": 0.25}
BASE = ["--sigma", "0.25", "--n0", "10", "--n", "60", "--batch", "30", "--alpha", "0.1", "--quiet"]
SMALL = [*BASE, "--set", "certifier.reference_samples=20"]


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    data = deqcert.create_dataset("mnist-sample", split="test")
    return torch.stack([data[i][0] for i in range(8)])


# -- the protocol check ----------------------------------------------------------
def test_a_bare_module_gets_one_error_naming_every_missing_member() -> None:
    with pytest.raises(ModelProtocolError) as info:
        check_model(user_models.bare())
    text = str(info.value)
    assert "missing inject" in text and "missing f " in text and "\n" not in text
    assert "readout" not in text.replace("logits", "")  # present members are not blamed
    with pytest.raises(ModelProtocolError, match="missing num_classes.*missing readout"):
        check_model(nn.Linear(2, 2))
    bad = user_models.build()
    bad.num_classes = 1  # type: ignore[assignment]
    with pytest.raises(ModelProtocolError, match="num_classes is 1"):
        check_model(bad)


def test_certifying_or_saving_a_bare_module_fails_before_any_work(tmp_path: Path) -> None:
    certifier = deqcert.create_certifier("vanilla", noise=NOISE, n0=5, n=10)
    with pytest.raises(ModelProtocolError, match="missing inject.*missing f "):
        certifier.certify(user_models.bare(), torch.rand(1, 28, 28), generator=torch.Generator())
    with pytest.raises(ModelProtocolError, match="cannot save Bare"):
        deqcert.save_checkpoint(user_models.bare(), tmp_path / "x.safetensors")
    with pytest.raises(DeqcertError, match="--model FACTORY --weights"):
        deqcert.save_checkpoint(user_models.build(), tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_cli_with_a_bare_module_exits_2_with_one_line(cli: Callable[..., Result]) -> None:
    result = cli(["certify", "--model", f"{USER_MODELS}:bare", *SMALL])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "missing inject" in result.stderr and "missing f " in result.stderr


# -- deqcert.adapt on a plain PyTorch DEQ -----------------------------------------
def test_adapted_plain_deq_matches_the_users_own_forward(images: torch.Tensor) -> None:
    model = user_models.build()
    with torch.no_grad():
        assert torch.allclose(model(images), model.module(images), atol=2e-3)
    assert model.input_shape == (1, 28, 28)
    with torch.no_grad():
        model.module.head.bias.add_(1.0)
    for state in (model.state_dict(), model.module.state_dict()):  # the adapter's ("module.*")
        other = user_models.build()  # or the user's own state dict
        other.load_weights(state)
        with torch.no_grad():
            assert torch.equal(other(images), model(images))
    with pytest.raises(DataError, match=r"expected inputs of shape \(B, 1, 28, 28\)"):
        model.inject(torch.rand(2, 3, 28, 28))


@pytest.mark.parametrize("name", ["vanilla", "serialized"])
def test_plain_deq_is_certified_with_its_own_votes(name: str, images: torch.Tensor) -> None:
    """The certificate's counts are h_ref's votes: recounted with the user's own forward."""
    model = user_models.build()
    solver = {"name": "anderson", "tol": 1e-6, "max_iter": 100}
    options = (
        {"solver": solver}
        if name == "vanilla"
        else {"reference_solver": solver, "reference_samples": 20}
    )
    certifier = deqcert.create_certifier(
        name, noise=NOISE, n0=20, n=100, alpha=0.1, batch_size=50, **options
    )
    x = images[0]
    cert = certifier.certify(model, x, generator=torch.Generator().manual_seed(3))
    assert cert.sound and cert.n == 100
    if name == "vanilla":  # redraw the same noise and vote with the user's own DEQ
        generator = torch.Generator().manual_seed(3)
        noise = deqcert.create_noise("gaussian", sigma=0.25)
        votes = []
        for size in (20, 50, 50):
            with torch.no_grad():
                votes.append(model.module(noisy_batch(x, noise, size, generator)).argmax(1))
        counts = torch.bincount(torch.cat(votes[1:]), minlength=10)
        assert (counts - torch.tensor(cert.extra["estimation_counts"])).abs().sum() <= 2
    else:
        assert cert.counts["K"] == 20 and cert.extra["solves"]["reference"]["samples"] == 20


# -- list states (a locuslab-style MDEQ) ------------------------------------------------
def test_layout_packs_rows_independently() -> None:
    pieces = [torch.randn(3, 2, 4, 4), torch.randn(3, 5)]
    layout = Layout.of(pieces)
    flat = layout.pack(pieces)
    assert flat.shape == (3, 2 * 16 + 5) and layout.width == 37
    back = layout.unpack(flat)
    assert all(torch.equal(a, b) for a, b in zip(back, pieces, strict=True))
    one = layout.pack([p[1:2] for p in pieces])  # a row packed alone equals its row in the batch
    assert torch.equal(one[0], flat[1])
    assert isinstance(Layout.of(tuple(pieces)).unpack(flat), tuple)
    with pytest.raises(DataError, match="share the batch size"):
        Layout.of([torch.zeros(2, 3), torch.zeros(3, 3)])
    with pytest.raises(DataError, match="tensor or a list/tuple"):
        Layout.of({"a": torch.zeros(1)})


def test_mdeq_list_state_is_packed_and_certified(images: torch.Tensor) -> None:
    model = user_models.build_mdeq()
    with torch.no_grad():
        assert torch.allclose(model(images[:4]), model.module(images[:4]), atol=5e-3)
        u = model.inject(images[:4])
        z = model.init_state(u)
        assert z.shape == (4, 8 * 14 * 14 + 16 * 7 * 7)
        step = model.f(z + 0.1, u)
        alone = model.f(z[2:3] + 0.1, u[2:3])
        assert torch.allclose(step[2:3], alone, atol=1e-5)  # packing never mixes rows
    assert model.describe()["layouts"]["z"] == [[8, 14, 14], [16, 7, 7]]
    certifier = deqcert.create_certifier(
        "serialized",
        noise=NOISE,
        n0=10,
        n=40,
        alpha=0.1,
        batch_size=20,
        reference_samples=10,
        chain_start="anchor",
    )
    cert = certifier.certify(model, images[1], generator=torch.Generator().manual_seed(0))
    assert cert.counts["K"] == 10 and cert.sound


# -- TorchDEQ ---------------------------------------------------------------------
def test_torchdeq_model_is_certified_with_its_own_solver_settings(images: torch.Tensor) -> None:
    pytest.importorskip("torchdeq")
    model = user_models.build_torchdeq()
    settings = model.details["torchdeq"]
    assert settings == {
        "f_solver": "anderson",
        "eval_f_max_iter": 25,
        "f_tol": 1e-4,
        "f_stop_mode": "abs",
    }
    solver = model.reference_solver()
    described = solver.describe()
    assert (described["name"], described["max_iter"], described["tol"], described["stop_mode"]) == (
        "anderson",
        25,
        1e-4,
        "abs",
    )
    assert "TorchDEQ settings" in described["source"]
    model.module.eval()
    with torch.no_grad():  # h_ref is the classifier the user evaluates with TorchDEQ
        assert torch.allclose(model(images, solver=solver), model.module(images), atol=1e-3)
    certifier = deqcert.create_certifier(
        "vanilla", noise=NOISE, n0=10, n=50, alpha=0.1, solver=solver
    )
    cert = certifier.certify(model, images[0], generator=torch.Generator().manual_seed(0))
    assert "TorchDEQ settings" in cert.solvers["solver"]["source"]


def test_torchdeq_norm_reset_runs_before_each_certificate(images: torch.Tensor) -> None:
    pytest.importorskip("torchdeq")
    model = user_models.build_torchdeq()
    layer = model.module.layer
    with torch.no_grad():
        layer.weight_g.mul_(0.5)  # e.g. new weights loaded: `weight` is stale until reset
    stale = layer.weight.clone()
    certifier = deqcert.create_certifier(
        "vanilla", noise=NOISE, n0=5, n=10, solver=model.reference_solver()
    )
    certifier.certify(model, images[0], generator=torch.Generator().manual_seed(0))
    assert torch.allclose(layer.weight, 0.5 * stale)  # recomputed from weight_g, weight_v


def test_torchdeq_own_batch_stopping_solver_fails_the_probe(images: torch.Tensor) -> None:
    pytest.importorskip("torchdeq")
    from deqcert.adapters.torchdeq import torchdeq_solver

    model = user_models.build_mdeq()
    problems = guards.probe_solver(
        model, torchdeq_solver("anderson", max_iter=40, tol=1e-2), images[:3]
    )
    assert problems and "depends on the rest of its batch" in problems[0]
    builtin = deqcert.create_solver("anderson", max_iter=40, tol=1e-2, stop_mode="abs")
    assert guards.probe_solver(model, builtin, images[:3]) == []


# -- the CLI: --model, --weights, resume, merge, report, convert ---------------------------
def _header(path: Path) -> dict:
    return json.loads(path.read_text().splitlines()[0])


def test_cli_certifies_a_users_model_resumes_merges_and_reports(
    tmp_path: Path, cli: Callable[..., Result]
) -> None:
    weights = tmp_path / "w.pt"
    torch.save(user_models.build().module.state_dict(), weights)
    run = ["certify", "--model", f"{USER_MODELS}:build", "--weights", weights, *SMALL]
    whole = tmp_path / "run.jsonl"
    first = cli([*run, "--indices", "0-3", "--out", whole])
    assert first.exit_code == 0, first.output
    header = _header(whole)
    assert header["model"]["factory"] == f"{USER_MODELS}:build"
    assert header["checkpoint"]["sha256"] == header["model"]["weights_sha256"]
    assert header["h_ref"]["role"] == "reference_solver"
    again = cli([*run, "--indices", "0-3", "--out", whole])  # resume: nothing left to do
    assert again.exit_code == 0 and len(whole.read_text().splitlines()) == 5
    parts = [tmp_path / f"part{i}.jsonl" for i in (0, 1)]
    for i, part in enumerate(parts):
        shard = cli([*run, "--indices", "0-3", "--shard", f"{i}/2", "--out", part])
        assert shard.exit_code == 0, shard.output
    merged = tmp_path / "merged.jsonl"
    assert cli(["merge", merged, *parts]).exit_code == 0
    records = [json.loads(line) for line in whole.read_text().splitlines()[1:]]
    joined = [json.loads(line) for line in merged.read_text().splitlines()[1:]]
    key = [(r["index"], r["prediction"], r["counts"]) for r in records]
    assert sorted(key) == sorted((r["index"], r["prediction"], r["counts"]) for r in joined)
    report = cli(["report", whole, merged, "--format", "tsv"])
    assert report.exit_code == 0 and report.stdout.count("\n") >= 2
    other = tmp_path / "other.pt"  # different weights: the run is another run
    net = user_models.build().module
    torch.nn.init.zeros_(net.head.bias)
    with torch.no_grad():
        net.head.bias[3] = 5.0
    torch.save(net.state_dict(), other)
    refused = cli(
        [
            "certify",
            "--model",
            f"{USER_MODELS}:build",
            "--weights",
            other,
            *SMALL,
            "--indices",
            "0-3",
            "--out",
            whole,
        ]
    )
    assert refused.exit_code == 2 and "sha256" in refused.stderr


def test_convert_and_safetensors_weights(tmp_path: Path, cli: Callable[..., Result]) -> None:
    source = tmp_path / "w.pt"
    state = user_models.build().module.state_dict()
    torch.save(state, source)
    target = tmp_path / "w.safetensors"
    result = cli(["convert", source, target])
    assert result.exit_code == 0, result.output
    loaded = load_state(target)
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)
    out = tmp_path / "r.jsonl"
    run = cli(
        [
            "certify",
            "--model",
            f"{USER_MODELS}:build",
            "--weights",
            target,
            *SMALL,
            "--max",
            "1",
            "--out",
            out,
        ]
    )
    assert run.exit_code == 0, run.output
    pickled = tmp_path / "code.pt"
    torch.save({"model": nn.Linear(2, 2)}, pickled)  # a pickled module, not a state dict
    refused = cli(["convert", pickled, tmp_path / "x.safetensors"])
    assert refused.exit_code == 2 and "weights_only=True" in refused.stderr
    with pytest.raises(DeqcertError, match="must end in .safetensors"):
        convert(source, tmp_path / "x.bin")


def test_bad_model_specs_and_weights_are_one_line(
    tmp_path: Path, cli: Callable[..., Result]
) -> None:
    wrong = tmp_path / "wrong.pt"
    torch.save({"enc.weight": torch.zeros(3, 3)}, wrong)
    cases = [
        (["--model", "nowhere.py:build"], "file not found"),
        (["--model", f"{USER_MODELS}:nothing"], "has no callable nothing"),
        (["--model", "build"], "expected FILE.py:FACTORY"),
        (["--model", f"{USER_MODELS}:build", "--weights", wrong], "do not fit"),
        (["--weights", wrong], "--weights needs --model"),
        (["--model", f"{USER_MODELS}:build", "--checkpoint", wrong], "either --checkpoint"),
        (["--model", f"{USER_MODELS}:build_rgb"], "expected x of shape (3, 32, 32)"),
    ]
    for args, message in cases:
        result = cli(["certify", *args, *SMALL])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr


# -- the solver guard in a run ---------------------------------------------------------
class BatchMeanSolver:
    """A solver whose result for one sample depends on the rest of the batch."""

    def __init__(self, max_iter: int = 30, tol: float = 1e-3, stop_mode: str = "abs") -> None:
        self.max_iter, self.tol = max_iter, tol

    def solve(
        self, f: Callable[[torch.Tensor], torch.Tensor], z0: torch.Tensor
    ) -> deqcert.SolverResult:
        z = z0
        for _ in range(self.max_iter):
            z = f(z)
        z = z + 0.1 * z.mean(dim=0, keepdim=True)
        size = z.shape[0]
        return deqcert.SolverResult(
            z,
            self.max_iter,
            torch.zeros(size),
            torch.full((size,), self.max_iter),
            torch.ones(size, dtype=torch.bool),
        )

    def describe(self) -> dict:
        return {"name": "batch-mean", "max_iter": self.max_iter, "tol": self.tol}


@pytest.fixture
def batch_mean_solver():  # type: ignore[no-untyped-def]
    from deqcert.registry import solvers

    solvers.register("batch-mean", BatchMeanSolver, override=True)
    yield "batch-mean"
    solvers.unregister("batch-mean")


def test_a_batch_dependent_reference_solver_is_refused_unless_trusted(
    tmp_path: Path, cli: Callable[..., Result], batch_mean_solver: str
) -> None:
    run = [
        "certify",
        "--model",
        f"{USER_MODELS}:build",
        "--reference-solver",
        batch_mean_solver,
        *SMALL,
        "--max",
        "2",
    ]
    refused = cli([*run, "--out", tmp_path / "r.jsonl"])
    assert refused.exit_code == 2 and refused.stderr.count("\n") == 1, refused.output
    assert "reference_solver 'batch-mean' failed the solver probe" in refused.stderr
    assert not (tmp_path / "r.jsonl").exists()
    trusted = cli([*run, "--trust-solver", "--out", tmp_path / "t.jsonl"])
    assert trusted.exit_code == 0, trusted.output
    assert "deqcert: warning: trusting the solver anyway" in trusted.stderr
    records = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()[1:]]
    assert records and all(
        r["sound"] is False and r["certificate"]["sound"] is False for r in records
    )
    assert all("reference_solver" in r["solver_guard"]["failures"] for r in records)
    builtin = cli(
        [
            "certify",
            "--model",
            f"{USER_MODELS}:build",
            *SMALL,
            "--max",
            "1",
            "--out",
            tmp_path / "b.jsonl",
        ]
    )
    assert (
        builtin.exit_code == 0
        and json.loads((tmp_path / "b.jsonl").read_text().splitlines()[1])["sound"] is True
    )


def test_cli_torchdeq_model_records_where_h_ref_came_from(
    tmp_path: Path, cli: Callable[..., Result]
) -> None:
    pytest.importorskip("torchdeq")
    out = tmp_path / "t.jsonl"
    result = cli(
        [
            "certify",
            "--model",
            f"{USER_MODELS}:build_torchdeq",
            "--certifier",
            "vanilla",
            *BASE,
            "--max",
            "1",
            "--out",
            out,
        ]
    )
    assert result.exit_code == 0, result.output
    header = _header(out)
    assert "TorchDEQ settings" in header["h_ref"]["source"]
    assert header["config"]["solver"]["max_iter"] == 25
    record = json.loads(out.read_text().splitlines()[1])
    assert "TorchDEQ settings" in record["certificate"]["solvers"]["solver"]["source"]
    overridden = cli(
        [
            "certify",
            "--model",
            f"{USER_MODELS}:build_torchdeq",
            "--certifier",
            "vanilla",
            "--set",
            "solver.max_iter=7",
            *BASE,
            "--max",
            "1",
            "--out",
            tmp_path / "o.jsonl",
        ]
    )
    assert overridden.exit_code == 0, overridden.output
    assert "set by the run" in _header(tmp_path / "o.jsonl")["h_ref"]["source"]


def test_config_file_and_module_factory(tmp_path: Path, cli: Callable[..., Result]) -> None:
    weights = tmp_path / "w.pt"
    torch.save(user_models.build().module.state_dict(), weights)
    config = tmp_path / "run.toml"
    config.write_text(f'model = "user_models:build"\nweights = "{weights}"\nmax = 1\n')
    out = tmp_path / "p.jsonl"
    result = cli(["predict", "--config", config, *SMALL, "--out", out])
    assert result.exit_code == 0, result.output
    header = _header(out)
    assert header["config"]["model"] == "user_models:build"
    assert header["config"]["checkpoint"] == "none" and header["checkpoint"]["path"] == str(weights)
    assert json.loads(out.read_text().splitlines()[1])["mode"] == "predict"


def test_cli_refuses_torchdeqs_own_anderson_as_reference_solver(
    tmp_path: Path, cli: Callable[..., Result]
) -> None:
    pytest.importorskip("torchdeq")
    from deqcert.adapters.torchdeq import TorchDEQSolver
    from deqcert.registry import solvers

    class TorchDEQAnderson(TorchDEQSolver):
        def __init__(self, **options: object) -> None:
            super().__init__("anderson", **options)  # type: ignore[arg-type]

    solvers.register("torchdeq-anderson", TorchDEQAnderson, override=True)
    try:
        result = cli(
            [
                "certify",
                "--model",
                f"{USER_MODELS}:build_mdeq",
                "--reference-solver",
                "torchdeq-anderson",
                "--set",
                "reference_solver.tol=0.01",
                *SMALL,
                "--out",
                tmp_path / "r.jsonl",
            ]
        )
    finally:
        solvers.unregister("torchdeq-anderson")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert "depends on the rest of its batch" in result.stderr
    assert not (tmp_path / "r.jsonl").exists()
