"""The run layer: one checkpoint read, one build per component, roles read from the certifier."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST
from typer.testing import Result

from deqcert import checkpoint
from deqcert.certify.base import solver_field
from deqcert.certify.vanilla import VanillaCertifier, VanillaOptions
from deqcert.registry import certifiers, solvers
from deqcert.results import ResultsWriter, read_results
from deqcert.run import CertifyConfig
from deqcert.solvers.naive import NaiveSolver
from deqcert.specs import SolverOption


class CountingSolver(NaiveSolver):
    """A naive solver that counts how often it is built."""

    built = 0

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        type(self).built += 1


@pytest.fixture
def counting_solver() -> Iterator[type[CountingSolver]]:
    CountingSolver.built = 0
    solvers.register("counting", CountingSolver)
    yield CountingSolver
    solvers.unregister("counting")


def test_a_run_reads_the_checkpoint_metadata_once_and_builds_each_solver_once(
    tiny_checkpoint: Path, tmp_path: Path, counting_solver: type[CountingSolver],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads = {"metadata": 0, "tensors": 0}
    real_metadata, real_tensors = checkpoint.checkpoint_metadata, checkpoint.load_file

    def metadata(path: Any) -> dict[str, Any]:
        reads["metadata"] += 1
        return real_metadata(path)

    def tensors(path: Any, **kw: Any) -> Any:
        reads["tensors"] += 1
        return real_tensors(path, **kw)

    monkeypatch.setattr(checkpoint, "checkpoint_metadata", metadata)
    monkeypatch.setattr(checkpoint, "load_file", tensors)
    spec = {"name": "counting", "max_iter": 3}
    config = CertifyConfig.from_sources(
        values={"checkpoint": str(tiny_checkpoint), "indices": "0-1", "n0": 10, "n": 60,
                "batch": 30, "certifier": {"reference_samples": 10},
                "solver": spec, "warmup_solver": spec, "reference_solver": spec},
    )
    assert counting_solver.built == 0  # validating a config builds no solver
    summary = config.build().run(tmp_path / "run.jsonl")
    assert len(summary.records) == 2
    assert reads == {"metadata": 1, "tensors": 1}
    assert counting_solver.built == 3  # solver, warmup_solver, reference_solver: once each


class DraftOptions(VanillaOptions):
    """Vanilla smoothing plus a solver role no built-in certifier has."""

    draft_solver: SolverOption = solver_field("Solver of the draft pass.", max_iter=2)


class DraftCertifier(VanillaCertifier):
    """A plugin certifier defined here only: nothing outside this test module knows its role."""

    Options = DraftOptions


@pytest.fixture
def drafty() -> Iterator[str]:
    certifiers.register("drafty", DraftCertifier)
    yield "drafty"
    certifiers.unregister("drafty")


def test_a_new_certifier_role_gets_a_config_key_with_the_certifiers_default(drafty: str) -> None:
    default = CertifyConfig.model_validate({"certifier": drafty})
    assert default.draft_solver.model_dump() == {"name": "anderson", "max_iter": 2}
    config = CertifyConfig.from_sources(values={"certifier": drafty},
                                        sets=["draft_solver.name=naive"])
    assert config.draft_solver.model_dump() == {"name": "naive", "max_iter": 2}  # carried over
    assert config.effective()["draft_solver"] == {"name": "naive", "max_iter": 2}
    with pytest.raises(Exception, match="takes no draft_solver"):
        CertifyConfig.model_validate({"certifier": "vanilla", "draft_solver": "naive"})


def test_a_new_certifier_role_gets_a_cli_flag(
    drafty: str, tiny_checkpoint: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    assert "--draft-solver" in cli(["certify", "--help"]).stdout
    out = tmp_path / "run.jsonl"
    fast = [a for a in FAST if a not in ("--set", "certifier.reference_samples=40")]
    result = cli(["certify", "--checkpoint", tiny_checkpoint, *fast, "--certifier", drafty,
                  "--draft-solver", "naive", "--indices", "0", "--out", out, "--quiet"])
    assert result.exit_code == 0, result.stderr
    header = read_results(out).header
    assert header is not None
    assert header["config"]["draft_solver"] == {"name": "naive", "max_iter": 2}
    assert header["certifier"]["draft_solver"]["name"] == "naive"


def test_an_optional_role_can_be_switched_off() -> None:
    from deqcert.checkpoint import CHECKPOINT_DIR, default_checkpoint

    contractive = default_checkpoint().parent / "contractive-convdeq-sigma0.25.safetensors"
    assert CHECKPOINT_DIR in str(contractive)
    config = CertifyConfig.from_sources(
        values={"certifier": "verified", "checkpoint": str(contractive)}, sets=["solver=null"]
    )
    assert config.solver is None  # verified: no cheap solver, only checked Picard steps
    pipeline = config.build(validate_inputs=False)
    assert pipeline.certifier.describe()["solver"] is None
    default = CertifyConfig.from_sources(values={"certifier": "verified"})
    assert default.solver is not None and default.solver.options == {"max_iter": 2, "tol": 1e-4}


def test_old_headers_with_null_roles_still_resume(tiny_checkpoint: Path, tmp_path: Path) -> None:
    config = CertifyConfig.from_sources(
        values={"checkpoint": str(tiny_checkpoint), "certifier": "vanilla", "indices": "0-1",
                "n0": 10, "n": 40, "batch": 20}
    )
    pipeline = config.build()
    out = tmp_path / "old.jsonl"
    header = pipeline.header()
    header["config"].update(warmup_solver=None, reference_solver=None)  # as 0.1.0 wrote it
    record = next(pipeline.records([0]))
    out.write_text(json.dumps(header) + "\n" + json.dumps({"type": "record", **record}) + "\n")
    writer = ResultsWriter(out, pipeline.header())
    assert writer.done == {0}


def test_one_spec_shape_everywhere_and_the_nested_form_is_deprecated() -> None:
    from deqcert.specs import DeqcertDeprecationWarning
    from deqcert.train import TrainConfig

    flat = TrainConfig.parse({"solver": {"name": "naive", "max_iter": 4}})
    with pytest.warns(DeqcertDeprecationWarning, match="write the options next to the name"):
        nested = TrainConfig.parse({"solver": {"name": "naive", "options": {"max_iter": 4}}})
    assert flat == nested and flat.model_dump()["solver"] == {"name": "naive", "max_iter": 4}
    with pytest.warns(DeqcertDeprecationWarning):  # certify configs read the old form too
        config = CertifyConfig.model_validate(
            {"solver": {"name": "naive", "options": {"max_iter": 2}}}
        )
    assert config.solver.model_dump() == {"name": "naive", "max_iter": 2}


def test_the_cli_prints_a_deprecation_as_one_warning_line(
    tmp_path: Path, cli: Callable[..., Result]
) -> None:
    config = tmp_path / "train.toml"
    config.write_text('model = "mlpdeq"\nmodel_options = {hidden = 4}\nepochs = 1\n'
                      'train_limit = 40\nbackward = "jfb"\n[eval]\nlimit = 10\n'
                      '[solver]\nname = "anderson"\noptions = { max_iter = 5 }\n')
    result = cli(["train", "--config", config, "--out", tmp_path / "m.safetensors", "--quiet"])
    assert result.exit_code == 0, result.stderr
    warning = [line for line in result.stderr.splitlines() if "deprecated" in line]
    assert warning == [
        "deqcert: warning: the nested spec form {'name': 'anderson', 'options': {...}} is "
        "deprecated; write the options next to the name: {'name': 'anderson', 'max_iter': 5}"
    ]
