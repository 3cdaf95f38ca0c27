"""Output that tells the truth at a glance: capped radii, solver health, norms, TSV, plots."""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _helpers import SIGMA, gen, make_certifier
from scipy.stats import norm as normal
from typer.testing import Result

from deqcert.certify import bounds
from deqcert.errors import DeqcertWarning, OptionError
from deqcert.notes import cap_hint, unconverged_warning
from deqcert.report import build_report, notes, rows, to_markdown
from deqcert.results import ResultsWriter, read_results, sidecar_path
from deqcert.results.formats import floor_digits
from deqcert.testing.oracles import LinearOracle

# --- the cap ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", bounds.SERIALIZED_BOUNDS)
def test_bound_cap_is_the_named_bound_on_perfect_counts(name: str) -> None:
    n, k, alpha, n0 = 300, 40, 0.01, 20
    cap = bounds.bound_cap(name, n, k, alpha)
    perfect = {"C_m": n, "d": 0, "K": k, "N1": k, "N2": k, "reference_A": k, "selection_n": n0}
    # reached: on perfect counts, for some selection outcome (``sound`` picks its branch there)
    reached = [bounds.serialized_bound(name, {**perfect, "selection_A": a}, n, alpha).p_lower
               for a in range(n0 + 1)]
    assert cap == max(reached)
    rng = random.Random(0)
    for _ in range(200):  # no counts give more than the cap
        n2 = rng.randint(0, k)
        d = rng.randint(0, n2)
        reference_a = rng.randint(n2 - d, k - d)  # N1 = n2 - d of them also chain votes for A
        counts = {"C_m": rng.randint(0, n), "d": d, "K": k, "N1": n2 - d, "N2": n2,
                  "reference_A": reference_a, "selection_A": rng.randint(0, n0),
                  "selection_n": n0}
        assert bounds.serialized_bound(name, counts, n, alpha).p_lower <= cap


def test_the_issue_s_cap_figure() -> None:
    """The defaults the issue used (n=2000, K=200, alpha=0.001, sigma=0.25) capped the old
    bound at r=0.410; the tighter default ``sound`` bound raises that cap."""
    old = bounds.bound_cap("sound-v1", 2000, 200, 0.001)
    assert round(0.25 * normal.ppf(old), 3) == 0.410
    assert round(old, 4) == 0.9494
    assert bounds.bound_cap("sound", 2000, 200, 0.001) > old


def test_serialized_radius_at_the_cap_is_flagged() -> None:
    model, x = LinearOracle.with_p_a(1 - 1e-9, SIGMA)  # every vote is A
    certifier = make_certifier("serialized", solver=1, warmup_solver=4, reference_solver=5,
                               n0=7, n=60, reference_samples=20, batch_size=10)
    cert = certifier.certify(model, x, generator=gen())
    assert cert.counts["C_m"] == 60 and cert.counts["d"] == 0
    expected = SIGMA * normal.ppf(bounds.bound_cap("sound", 60, 20, 0.1))
    assert cert.at_cap is True and cert.radius == pytest.approx(expected)
    assert cert.radius_cap == pytest.approx(expected)


def test_vanilla_radius_below_the_cap_is_not_flagged() -> None:
    model, x = LinearOracle.with_p_a(0.8, SIGMA)
    cert = make_certifier("vanilla", solver=3, n0=7, n=53, batch_size=10).certify(
        model, x, generator=gen()
    )
    assert cert.at_cap is False and 0 < cert.radius < cert.radius_cap  # type: ignore[operator]
    assert cert.radius_cap == pytest.approx(SIGMA * normal.ppf(0.1 ** (1 / 53)))


def capped_record(index: int, at_cap: bool = True, **extra: Any) -> dict[str, Any]:
    return {"index": index, "label": 1, "prediction": 1, "radius": 0.41 if at_cap else 0.2,
            "correct": True, "p_lower": 0.9494, "nfe": 10, "seconds": 0.1, "bound": "sound",
            "sound": True, "at_cap": at_cap, "radius_cap": 0.41, "counts": {"K": 200},
            "certificate": {"n": 2000, "alpha": 0.001}, **extra}


def test_cap_hint_names_the_cap_and_what_raises_it() -> None:
    hint = cap_hint([capped_record(0), capped_record(1, at_cap=False)])
    assert hint is not None and "1 radius is at the cap of the sound bound" in hint
    assert "r=0.410" in hint and "n=2000, K=200, alpha=0.001" in hint
    assert "reference_samples" in hint and "--n" in hint and "--alpha" in hint
    assert cap_hint([capped_record(0, at_cap=False)]) is None
    vanilla = capped_record(0, bound="clopper-pearson", counts={"n_A": 2000})
    assert "K" not in cap_hint([vanilla]).split("):")[1]  # type: ignore[union-attr]


def test_cli_table_marks_capped_radii() -> None:
    from rich.console import Console

    from deqcert.cli.run import _records_table

    console = Console(width=200, record=True)
    console.print(_records_table([capped_record(0), capped_record(1, at_cap=False)], "certify"))
    text = console.export_text()
    assert "0.410*" in text and "0.200*" not in text and "0.200" in text


def test_report_marks_capped_runs(tmp_path: Path) -> None:
    path = tmp_path / "srs.jsonl"
    with ResultsWriter(path, {"config": {"mode": "certify"}}) as writer:
        for i in range(3):
            writer.write(capped_record(i, at_cap=i < 2))
    report = build_report([path], [0.0])
    assert report.runs[0].capped == 2
    table = dict((row[0], row[1:]) for row in rows(report)[1])
    assert table["radii at the cap *"] == ["2 of 3 (r=0.410)"]
    assert notes(report) and "2 radii are at the cap" in notes(report)[0]


# --- solver health ------------------------------------------------------------------------


def test_serialized_health_figures() -> None:
    model, x = LinearOracle.with_p_a(0.8, SIGMA)
    truncated = make_certifier("serialized", solver=1, warmup_solver=4, reference_solver=2,
                               n0=7, n=53, reference_samples=20, batch_size=10)
    cert = truncated.certify(model, x, generator=gen())
    health = cert.health
    assert health["reference_unconverged"] == 1.0  # 2 naive steps never meet the tolerance
    median, largest = health["chain_residual_median"], health["chain_residual_max"]
    assert median is not None and largest is not None and 0 < median <= largest
    converged = make_certifier(
        "serialized", solver=1, warmup_solver=4, n0=7, n=53, reference_samples=20,
        batch_size=10, reference_solver={"name": "anderson", "max_iter": 60, "tol": 1e-3},
    ).certify(model, x, generator=gen())
    assert converged.health["reference_unconverged"] == 0.0
    assert converged.unconverged_fraction == 0.0  # no longer the chains' share (1.0)


def test_unconverged_warning_says_h_ref_is_the_truncated_solve() -> None:
    records = [{"reference_unconverged": 0.02}, {"reference_unconverged": 0.0}]
    assert unconverged_warning(records) is None  # 1 % on average: at the threshold
    text = unconverged_warning([{"reference_unconverged": 0.5}])
    assert text is not None and "50.0%" in text and "truncated solve" in text
    assert unconverged_warning([{"index": 0}]) is None  # old records: nothing said


def test_a_run_with_unconverged_reference_solves_warns_once(
    tiny_checkpoint: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    out = tmp_path / "run.jsonl"
    result = cli(["certify", "--checkpoint", tiny_checkpoint, "--certifier", "vanilla",
                  "--indices", "0,1", "--n0", "10", "--n", "40", "--batch", "40", "--quiet",
                  "--set", "solver.max_iter=1", "--out", out])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.count("deqcert: warning:") == 1
    assert "h_ref is the truncated solve" in result.stderr
    records = read_results(out).records
    assert all(r["reference_unconverged"] == 1.0 for r in records)
    for r in records:  # every record says whether its radius is at the cap, and the cap
        assert isinstance(r["at_cap"], bool) and r["radius_cap"] == pytest.approx(
            0.25 * normal.ppf(0.001 ** (1 / 40)))
        assert r["at_cap"] == (r["prediction"] != -1 and r["counts"]["n_A"] == 40)


def test_pipeline_warning_is_a_deqcert_warning(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from deqcert.run.config import CertifyConfig

    config = CertifyConfig.model_validate({
        "checkpoint": str(tiny_checkpoint), "certifier": "vanilla", "indices": "0", "n0": 5,
        "n": 20, "batch": 20, "solver": {"name": "anderson", "max_iter": 1},
        "out": str(tmp_path / "r.jsonl"),
    })
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config.build().run()
    assert [w.category for w in caught if "h_ref" in str(w.message)] == [DeqcertWarning]


# --- TSV: Cohen's format, rounding down, header fields -------------------------------------

COHEN = (
    "idx\tlabel\tpredict\tradius\tcorrect\ttime\n"
    "0\t7\t7\t0.9123\t1\t0:00:01.234567\n"
    "20\t2\t2\t0.4016756872\t1\t0:00:01.5\n"
    "40\t1\t-1\t0.0\t0\t0:00:02.000001\n"
    "60\t4\t9\t0.1\t0\t0:01:00\n"
)


def test_report_reads_cohens_tsv_without_a_sidecar(tmp_path: Path) -> None:
    path = tmp_path / "sigma_0.25.tsv"
    path.write_text(COHEN)
    loaded = read_results(path)
    assert loaded.header is None and loaded.records[0]["seconds"] == pytest.approx(1.234567)
    assert loaded.records[3]["seconds"] == 60.0 and loaded.records[0]["mode"] == "certify"
    run = build_report([path], [0.0, 0.5]).runs[0]
    assert run.mode == "certify" and run.inputs == 4
    assert run.certified == {0.0: 0.5, 0.5: 0.25}
    assert run.acr == pytest.approx((0.9123 + 0.4016756872) / 4)
    assert run.abstain_rate == 0.25 and run.norm is None
    assert "0.250" in to_markdown(build_report([path], [0.5]))


def test_report_reads_cohens_tsv_with_a_sidecar_and_keeps_unsound_marks(tmp_path: Path) -> None:
    path = tmp_path / "repro.tsv"
    path.write_text(COHEN)
    head = {"type": "header", "config": {"mode": "certify",
                                         "noise": {"name": "gaussian", "sigma": 0.25}},
            "certifier": {"name": "serialized", "bound": "repro", "sound": False, "n": 2000,
                          "reference_samples": 200, "noise": {"norm": "l2"}}}
    sidecar_path(path).write_text(__import__("json").dumps(head))
    run = build_report([path], [0.5]).runs[0]
    assert run.mark == "UNSOUND" and run.bound == "repro" and run.norm == "l2"
    assert run.noise == "gaussian sigma=0.25" and run.certified == {0.5: 0.25}
    assert run.description == "serialized (repro, UNSOUND), n=2000, K=200, sigma=0.25"


def test_tsv_radii_are_rounded_down(tmp_path: Path) -> None:
    assert floor_digits(0.4016756872) == "0.401675" and floor_digits(0.41) == "0.41"
    rng = random.Random(1)
    assert all(float(floor_digits(v)) <= v for v in (rng.uniform(0, 3) for _ in range(5000)))
    head = {"config": {"mode": "certify"}}
    runs = []
    for suffix in ("jsonl", "tsv"):
        path = tmp_path / f"run.{suffix}"
        with ResultsWriter(path, head) as writer:
            writer.write({"index": 0, "label": 1, "prediction": 1, "radius": 0.4016756872,
                          "correct": True, "seconds": 0.1})
        runs.append(path)
    assert runs[1].read_text().splitlines()[1].split("\t")[3] == "0.401675"
    report = build_report(runs, [0.401676])
    assert [run.certified[0.401676] for run in report.runs] == [0.0, 0.0]


# --- norms ----------------------------------------------------------------------------------


def write_run(path: Path, norm: str, noise: dict[str, Any], radii: list[float],
              certifier: str = "vanilla", **described: Any) -> Path:
    head = {"config": {"mode": "certify", "noise": noise},
            "certifier": {"name": certifier, "noise": {**noise, "norm": norm}, "n": 2000,
                          **described}}
    with ResultsWriter(path, head) as writer:
        for i, radius in enumerate(radii):
            writer.write({"index": i, "label": 1, "prediction": 1, "radius": radius,
                          "correct": True, "seconds": 0.1, "bound": "clopper-pearson",
                          "sound": True})
    return path


def test_report_groups_runs_by_norm(tmp_path: Path) -> None:
    l2 = write_run(tmp_path / "g.jsonl", "l2", {"name": "gaussian", "sigma": 0.5}, [0.3, 0.6])
    l1 = write_run(tmp_path / "l.jsonl", "l1", {"name": "laplace", "scale": 0.5}, [0.2, 0.2])
    l2b = write_run(tmp_path / "g2.jsonl", "l2", {"name": "gaussian", "sigma": 0.25}, [0.1, 0.2])
    report = build_report([l2, l1, l2b], [0.0, 0.25])
    assert [run.label for run in report.runs] == ["g.jsonl", "g2.jsonl", "l.jsonl"]
    assert [norm for norm, _ in report.groups()] == ["l2", "l1"]
    markdown = to_markdown(report)
    assert "**l2 radius**" in markdown and "**l1 radius**" in markdown
    l1_table = markdown.split("**l1 radius**")[1]
    assert "g.jsonl" not in l1_table and "| noise | laplace scale=0.5 |" in l1_table
    assert "| norm | l2 | l2 |" in markdown


# --- the plot -------------------------------------------------------------------------------


def test_plot_legend_curves_and_panels(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from deqcert.plotting import figure

    gauss = {"name": "gaussian", "sigma": 0.5}
    a = write_run(tmp_path / "a.jsonl", "l2", gauss, [0.41, 0.41, 0.41],
                  certifier="serialized", bound="sound", reference_samples=200)
    b = write_run(tmp_path / "b.jsonl", "l2", gauss, [0.41, 0.41, 0.41],
                  certifier="serialized", bound="sound", reference_samples=200)
    c = write_run(tmp_path / "c.jsonl", "l2", gauss, [0.3, 0.7, 1.1])
    report = build_report([a, b, c])
    fig = figure(report.runs, report.radii)
    (ax,) = fig.axes
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels == ["serialized (clopper-pearson), n=2000, K=200, sigma=0.5 [a.jsonl]",
                      "serialized (clopper-pearson), n=2000, K=200, sigma=0.5 [b.jsonl]",
                      "vanilla (clopper-pearson), n=2000, sigma=0.5"]
    lines = ax.get_lines()
    assert len({(line.get_linestyle(), line.get_marker()) for line in lines}) == 3
    for line in lines:
        xs, ys = line.get_xdata(), line.get_ydata()
        assert ys[0] == 1.0 and ys[-1] == 0.0 and xs[-1] > 1.1  # drops to 0 past the largest
    assert "sigma=0.5" in ax.get_title() and "l2" in ax.get_xlabel()
    l1 = write_run(tmp_path / "l.jsonl", "l1", {"name": "laplace", "scale": 0.5}, [0.2])
    two = build_report([a, l1])
    assert len(figure(two.runs, two.radii).axes) == 2  # one panel per norm


@pytest.mark.parametrize(("suffix", "magic"), [(".png", b"\x89PNG"), (".svg", b"<?xml"),
                                               (".pdf", b"%PDF")])
def test_plot_formats(tmp_path: Path, suffix: str, magic: bytes) -> None:
    pytest.importorskip("matplotlib")
    from deqcert.report import plot

    run = write_run(tmp_path / "a.jsonl", "l2", {"name": "gaussian", "sigma": 0.5}, [0.3])
    out = plot(build_report([run]), tmp_path / f"curve{suffix}")
    assert out.read_bytes()[: len(magic)] == magic


def test_plot_refuses_an_unknown_format(tmp_path: Path, cli: Callable[..., Result]) -> None:
    run = write_run(tmp_path / "a.jsonl", "l2", {"name": "gaussian", "sigma": 0.5}, [0.3])
    result = cli(["report", run, "--plot", tmp_path / "c.jpg"])
    assert result.exit_code == 2 and ".png, .svg, .pdf" in result.stderr
    from deqcert.plotting import check_plot_path

    with pytest.raises(OptionError):
        check_plot_path("x.gif")


# --- one set of defaults ----------------------------------------------------------------------


def test_api_cli_and_config_share_one_set_of_defaults() -> None:
    from deqcert import create_certifier, defaults
    from deqcert.run.config import CertifyConfig

    config = CertifyConfig()
    described = create_certifier("serialized", noise={"name": "gaussian", "sigma": 0.25}).describe()
    assert (config.n0, config.n, config.alpha, config.batch) == (
        described["n0"], described["n"], described["alpha"], described["batch_size"]
    ) == (defaults.N0, defaults.N, defaults.ALPHA, defaults.BATCH) == (100, 10_000, 0.001, 400)
    assert config.certifier.options == {}  # the CLI adds nothing of its own
    assert (described["reference_samples"], described["chain_start"]) == (400, "anchor")
    pipeline_options = CertifyConfig.model_validate({"certifier": "vanilla"})
    assert pipeline_options.n == create_certifier(
        "vanilla", noise={"name": "gaussian", "sigma": 0.25}
    ).describe()["n"]


# --- smaller points ---------------------------------------------------------------------------


def test_every_bundled_checkpoint_has_a_short_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Callable[..., Result]
) -> None:
    from deqcert.checkpoint import bundled_checkpoints, default_checkpoint, resolve_checkpoint

    monkeypatch.chdir(tmp_path)
    bundled = bundled_checkpoints()
    assert {"default", "mdeq-small-sigma0.25", "mdeq-small-sigma0.5"} <= set(bundled)
    assert bundled["default"] == default_checkpoint()
    for name, path in bundled.items():
        assert resolve_checkpoint(name) == path and path.is_file()
        if name != "default":
            assert resolve_checkpoint(f"{name}.safetensors") == path
    result = cli(["info", "mdeq-small-sigma0.5", "--json"])
    assert result.exit_code == 0 and '"sigma": 0.5' in result.stdout
    missing = cli(["info", "mdeq-small-sigma9"])
    assert missing.exit_code == 2 and "mdeq-small-sigma0.5" in missing.stderr


def test_certifying_at_another_sigma_warns(
    tiny_checkpoint: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    from types import SimpleNamespace

    from deqcert.run.resolve import run_notes

    def config(sigma: float) -> Any:
        noise = SimpleNamespace(options={"sigma": sigma})
        return SimpleNamespace(noise=noise, checkpoint="x.safetensors", mode="certify")

    (note,) = run_notes(config(0.5), {"sigma": 0.25}, object())
    assert "sigma=0.5" in note and "trained at sigma=0.25" in note
    assert run_notes(config(0.25), {"sigma": 0.25}, object()) == []
    result = cli(["certify", "--checkpoint", tiny_checkpoint, "--indices", "0", "--n", "20",
                  "--batch", "20", "--sigma", "0.5", "--set", "certifier.reference_samples=5",
                  "--quiet", "--out", tmp_path / "r.jsonl"])
    assert result.exit_code == 0 and "trained at sigma=0.25" in result.stderr
    bad = cli(["certify", "--checkpoint", tiny_checkpoint, "--sigma", "0.5", "--indices", "99999"])
    assert bad.exit_code == 2 and len(bad.stderr.splitlines()) == 1  # an error: no warning


def test_info_shows_path_and_sha256_whole(cli: Callable[..., Result]) -> None:
    from deqcert.checkpoint import default_checkpoint, file_sha256

    result = cli(["info", "default"], env={"COLUMNS": "60"})
    assert f"path: {default_checkpoint()}" in result.stdout
    assert f"sha256: {file_sha256(default_checkpoint())}" in result.stdout


def test_serialized_predict_says_it_is_heuristic(
    tiny_checkpoint: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    result = cli(["predict", "--checkpoint", tiny_checkpoint, "--indices", "0", "--n", "40",
                  "--batch", "40", "--set", "certifier.reference_samples=10", "--quiet",
                  "--out", tmp_path / "p.jsonl"])
    assert result.exit_code == 0, result.stderr
    assert "serialized PREDICT is heuristic" in result.stderr
    assert "reference solves" not in result.stderr  # PREDICT makes none


def test_counts_and_tiny_p_values_read_right() -> None:
    from deqcert.cli.run import format_p_value, plural

    assert (plural(1, "input"), plural(0, "input"), plural(5, "input")) == (
        "1 input", "0 inputs", "5 inputs")
    assert format_p_value(0.0) == "<1e-300" and format_p_value(1.24e-60) == "1.24e-60"
