"""The deqcert command line: certify, predict, train, list, info, merge, report."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import FAST
from typer.testing import Result

from deqcert import __version__, load_checkpoint
from deqcert.registry import solvers
from deqcert.results import read_results


def test_certify_prints_a_table_and_writes_header_and_records(
    tiny_checkpoint: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    out = tmp_path / "run.jsonl"
    result = cli(["certify", "--checkpoint", tiny_checkpoint, *FAST, "--indices", "0-2",
                  "--seed", "3", "--out", out])
    assert result.exit_code == 0, result.stderr
    assert "certify results" in result.stdout and f"results written to {out}" in result.stdout
    run = read_results(out)
    assert run.header is not None and run.indices == [0, 1, 2]
    assert run.header["deqcert_version"] == __version__ and run.header["seed"] == 3
    sha = hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    assert run.header["checkpoint"]["sha256"] == sha
    config = run.header["config"]
    assert config["noise"] == {"name": "gaussian", "sigma": 0.25}  # from the checkpoint
    assert config["n"] == 200 and config["certifier"]["reference_samples"] == 40
    for record in run.records:
        assert {"index", "label", "prediction", "radius", "correct", "p_lower", "counts", "nfe",
                "seconds", "bound"} <= set(record)


@pytest.mark.parametrize(
    "flags",
    [["--certifier", "serialized", "--solver", "broyden"], ["--certifier", "vanilla"],
     ["--solver", "naive", "--set", "certifier.bound=paper"]],
)
def test_certifier_and_solver_choices(
    flags: list[str], tiny_checkpoint: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    out = tmp_path / "run.jsonl"
    args = ["certify", "--checkpoint", tiny_checkpoint, *FAST, "--indices", "0", "--out", out]
    if "vanilla" in flags:
        args = [a for a in args if a != "certifier.reference_samples=40" and a != "--set"]
    result = cli([*args, *flags, "--quiet"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(out)
    header = read_results(out).header
    assert header is not None
    assert header["certifier"]["name"] == flags[flags.index("--certifier") + 1] \
        if "--certifier" in flags else "serialized"
    if "broyden" in flags:
        assert header["config"]["solver"] == {"name": "broyden", "max_iter": 1}


def test_predict_and_tsv_output(
    tiny_checkpoint: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    out = tmp_path / "pred.tsv"
    result = cli(["predict", "--checkpoint", tiny_checkpoint, *FAST, "--indices", "0-1",
                  "--out", out])
    assert result.exit_code == 0, result.stderr
    lines = out.read_text().splitlines()
    assert lines[0].split("\t") == ["idx", "label", "predict", "correct", "time"]
    assert [line.split("\t")[0] for line in lines[1:]] == ["0", "1"]
    assert read_results(out).header["config"]["mode"] == "predict"  # type: ignore[index]


def test_config_file_with_flags_and_set(
    tiny_checkpoint: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    config = tmp_path / "run.toml"
    config.write_text(f'checkpoint = "{tiny_checkpoint}"\nn = 80\nn0 = 8\nbatch = 40\n'
                      'indices = "5"\n[certifier]\nname = "serialized"\nreference_samples = 8\n')
    out = tmp_path / "run.jsonl"
    result = cli(["certify", "--config", config, "--n", "60", "--set", "batch=30",
                  "--out", out, "--quiet"])
    assert result.exit_code == 0, result.stderr
    header = read_results(out).header
    assert header is not None
    assert (header["config"]["n0"], header["config"]["n"], header["config"]["batch"]) == \
        (8, 60, 30)
    assert read_results(out).indices == [5]


def test_list_json_reports_origin_and_load_errors(cli: Callable[..., Result]) -> None:
    solvers.register("broken", "deqcert_no_such_module:Solver")
    try:
        result = cli(["list", "--json", "--check"])
    finally:
        solvers.unregister("broken")
    assert result.exit_code == 0, result.stderr
    rows = {(row["group"], row["name"]): row for row in json.loads(result.stdout)}
    assert set(rows[("deqcert.solvers", "anderson")]) >= {"name", "group", "origin", "error"}
    assert rows[("deqcert.solvers", "anderson")]["origin"] == "deqcert"
    assert rows[("deqcert.solvers", "anderson")]["error"] is None
    assert "deqcert_no_such_module" in rows[("deqcert.solvers", "broken")]["error"]
    assert ("deqcert.executors", "local") in rows
    table = cli(["list", "certifiers"])
    assert "serialized" in table.stdout and "anderson" not in table.stdout


def test_info_shows_the_checkpoint(tiny_checkpoint: Path, cli: Callable[..., Result]) -> None:
    result = cli(["info", tiny_checkpoint, "--json"])
    assert result.exit_code == 0, result.stderr
    details = json.loads(result.stdout)
    assert details["model"] == "mlpdeq" and details["sigma"] == 0.25
    assert details["sha256"] == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()


def test_train_writes_a_loadable_checkpoint(tmp_path: Path, cli: Callable[..., Result]) -> None:
    out = tmp_path / "new-folder" / "model.safetensors"  # created, as the default path's is
    sets = ["model=mlpdeq", "model_options.hidden=4", "epochs=1", "train_limit=100",
            "eval.limit=20", "backward=jfb"]
    result = cli(["train", *[a for s in sets for a in ("--set", s)], "--sigma", "0.5",
                  "--out", out, "--quiet"])
    assert result.exit_code == 0, result.stderr
    assert load_checkpoint(out).options.hidden == 4
    bad = cli(["train", "--set", "epochs=0", "--out", tmp_path / "other" / "bad.safetensors"])
    assert bad.exit_code == 2 and len(bad.stderr.splitlines()) == 1 and "epochs" in bad.stderr
    assert not (tmp_path / "other").exists()


def test_version_help_and_merge_errors(tmp_path: Path, cli: Callable[..., Result]) -> None:
    assert cli(["--version"]).stdout.strip() == f"deqcert {__version__}"
    assert "certify" in cli([]).stdout
    missing = cli(["merge", tmp_path / "all.jsonl", tmp_path / "part.jsonl"])
    assert missing.exit_code == 2 and missing.stderr.count("\n") == 1


@pytest.mark.slow
def test_default_certify_runs_on_the_bundled_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Callable[..., Result]
) -> None:
    from deqcert.checkpoint import bundled_sigmas

    if not bundled_sigmas():
        pytest.skip("no bundled checkpoint")
    monkeypatch.chdir(tmp_path)
    result = cli(["certify"])
    assert result.exit_code == 0, result.stderr
    written = list((tmp_path / "results").glob("certify-*.jsonl"))
    assert len(written) == 1 and len(read_results(written[0]).records) == 5


def test_ray_executor_without_ray_gives_the_install_hint(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    cli: Callable[..., Result],
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ray" else real(name, *a))
    out = tmp_path / "run.jsonl"
    result = cli(["certify", "--checkpoint", tiny_checkpoint, "--executor", "ray", "--out", out])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "deqcert: error: executor ray: the ray package is not installed; "
        "pip install 'deqcert[ray]'"
    )
    assert not out.exists()
