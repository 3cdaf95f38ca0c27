"""Reports: certified accuracy at radii, ACR, abstain rate, side by side, UNSOUND marks, plots."""

from __future__ import annotations

import builtins
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result

from deqcert.errors import OptionError
from deqcert.report import build_report, default_radii, parse_radii, plot, to_markdown, to_tsv
from deqcert.results import ResultsWriter

# (prediction, label, radius, sound): 2 correct (radii 0.3 and 0.6), 1 wrong, 1 abstain
RECORDS = [(1, 1, 0.3, True), (2, 2, 0.6, True), (3, 4, 0.2, True), (-1, 0, 0.0, True)]


def write_run(path: Path, records: list[tuple[int, int, float, bool]], sigma: float) -> Path:
    head = {"config": {"noise": {"name": "gaussian", "sigma": sigma}, "mode": "certify"},
            "certifier": {"noise": {"norm": "l2"}}}
    with ResultsWriter(path, head) as writer:
        for index, (pred, label, radius, sound) in enumerate(records):
            writer.write({"index": index, "label": label, "prediction": pred, "radius": radius,
                          "correct": pred == label, "nfe": 100 * (index + 1), "seconds": 1.0,
                          "bound": "sound" if sound else "repro", "sound": sound})
    return path


def test_statistics_follow_their_definitions(tmp_path: Path) -> None:
    report = build_report([write_run(tmp_path / "a.jsonl", RECORDS, 0.5)], [0.0, 0.3, 0.5, 1.0])
    run = report.runs[0]
    assert run.inputs == 4 and run.accuracy == 0.5
    assert run.certified == {0.0: 0.5, 0.3: 0.5, 0.5: 0.25, 1.0: 0.0}
    assert run.acr == pytest.approx((0.3 + 0.6) / 4)
    assert run.abstain_rate == 0.25
    assert run.mean_nfe == 250 and run.mean_seconds == 1.0
    assert run.sound


def test_default_radii_run_to_two_sigma_in_quarter_steps(tmp_path: Path) -> None:
    assert default_radii(0.5) == [0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0]
    report = build_report([write_run(tmp_path / "a.jsonl", RECORDS, 0.25),
                           write_run(tmp_path / "b.jsonl", RECORDS, 0.5)])
    assert report.radii == default_radii(0.5)
    assert parse_radii("0.5, 0,0.25") == [0.0, 0.25, 0.5]
    with pytest.raises(OptionError):
        parse_radii("a,b")


def test_side_by_side_formats_and_unsound_mark(tmp_path: Path) -> None:
    unsound = [(p, lab, r, False) for p, lab, r, _ in RECORDS]
    report = build_report([write_run(tmp_path / "srs.jsonl", RECORDS, 0.5),
                           write_run(tmp_path / "repro.jsonl", unsound, 0.5)], [0.0, 0.5])
    markdown = to_markdown(report)
    assert markdown.splitlines()[0] == "| metric | srs.jsonl | repro.jsonl (UNSOUND) |"
    assert "| certified acc. @ r=0.5 | 0.250 | 0.250 |" in markdown
    assert "| bound | sound | repro UNSOUND |" in markdown
    tsv = to_tsv(report).splitlines()
    assert tsv[0].split("\t") == ["metric", "srs.jsonl", "repro.jsonl (UNSOUND)"]
    assert ["ACR", "0.225", "0.225"] in [line.split("\t") for line in tsv]


def test_plot_is_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    report = build_report([write_run(tmp_path / "a.jsonl", RECORDS, 0.5)])
    out = plot(report, tmp_path / "curve.png")
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_plot_without_matplotlib_gives_the_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Callable[..., Result]
) -> None:
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    path = write_run(tmp_path / "a.jsonl", RECORDS, 0.5)
    result = cli(["report", path, "--plot", tmp_path / "c.png"])
    assert result.exit_code == 2
    assert "pip install 'deqcert[plot]'" in result.stderr
    assert not (tmp_path / "c.png").exists()


def test_report_command_formats(tmp_path: Path, cli: Callable[..., Result]) -> None:
    path = write_run(tmp_path / "a.jsonl", RECORDS, 0.5)
    table = cli(["report", path, "--radii", "0,0.5"])
    assert table.exit_code == 0 and "ACR" in table.stdout and "0.225" in table.stdout
    markdown = cli(["report", path, "--format", "markdown"])
    assert markdown.stdout.startswith("| metric | a.jsonl |")
    bad = cli(["report", path, "--format", "html"])
    assert bad.exit_code == 2 and "table, markdown, tsv" in bad.stderr
    missing = cli(["report", tmp_path / "none.jsonl"])
    assert missing.exit_code == 2 and "not found" in missing.stderr


def test_paper_bound_is_marked_not_proven_sound(tmp_path: Path) -> None:
    path = write_run(tmp_path / "p.jsonl", [(1, 1, 0.3, False)], 0.5)
    data = path.read_text().replace('"bound": "repro"', '"bound": "paper"')
    path.write_text(data)
    run = build_report([path]).runs[0]
    assert run.mark == "not proven sound" and run.title == "p.jsonl (not proven sound)"


# -- with_bound: another serialized bound from a certificate's counts ------------------------


def _serialized_record(bound: str, p_a: float = 0.8) -> dict[str, Any]:
    from _helpers import NOISE, SIGMA, make_certifier

    from deqcert.certify.dataset import certify_dataset
    from deqcert.testing.oracles import LinearOracle

    model, x = LinearOracle.with_p_a(p_a, SIGMA)
    certifier = make_certifier(
        "serialized", solver=1, warmup_solver=4, reference_solver=5, reference_samples=20,
        n0=7, n=60, batch_size=10, bound=bound, noise=NOISE,
    )
    return next(iter(certify_dataset(certifier, model, [(x, 1)], [0], seed=3)))


@pytest.mark.parametrize("bound", ["paper", "repro"])
def test_with_bound_matches_certifying_with_that_bound(bound: str) -> None:
    from _helpers import SIGMA

    from deqcert import create_noise
    from deqcert.report import with_bound

    sound = _serialized_record("sound")
    direct = _serialized_record(bound)  # same seed: same sampling, same counts
    assert sound["counts"]["C_m"] == direct["counts"]["C_m"]
    again = with_bound(sound, bound, create_noise("gaussian", sigma=SIGMA), n=60, alpha=0.1)
    for key in ("prediction", "radius", "correct", "p_lower", "bound", "sound"):
        assert again[key] == direct[key], key
    assert again["counts"] == sound["counts"] and again["nfe"] == sound["nfe"]
    back = with_bound(again, "sound", create_noise("gaussian", sigma=SIGMA), n=60, alpha=0.1)
    assert (back["prediction"], back["radius"], back["sound"]) == (
        sound["prediction"], sound["radius"], True,
    )


def test_with_bound_abstains_at_one_half_and_refuses_other_records() -> None:
    from deqcert import create_noise
    from deqcert.certify.bounds import serialized_bound
    from deqcert.errors import ResultsError
    from deqcert.report import with_bound

    noise = create_noise("gaussian", sigma=0.5)
    counts = {"C_m": 60, "d": 0, "K": 20, "N1": 20, "N2": 20}
    record = {"index": 0, "label": 2, "counts": counts, "certificate": {"extra": {"candidate": 2}}}
    high = with_bound(record, "sound-v1", noise, n=100, alpha=0.01)
    assert high["p_lower"] == serialized_bound("sound-v1", counts, 100, 0.01).p_lower
    assert high["p_lower"] < 0.5 and (high["prediction"], high["radius"]) == (-1, 0.0)
    assert high["correct"] is False
    all_a = {**record, "counts": {**counts, "C_m": 100}}
    full = with_bound(all_a, "sound-v1", noise, n=100, alpha=0.01)
    assert full["prediction"] == 2 and full["correct"] and full["radius"] > 0
    with pytest.raises(ResultsError, match="serialized certificate"):
        with_bound({**record, "certificate": {"extra": {}}}, "sound-v1", noise, n=100, alpha=0.01)
    with pytest.raises(ResultsError, match="lack 'K'"):
        with_bound({**record, "counts": {"C_m": 1, "d": 0}}, "sound-v1", noise, n=100, alpha=0.01)
    with pytest.raises(OptionError, match="unknown serialized bound"):
        with_bound(record, "magic", noise, n=100, alpha=0.01)
