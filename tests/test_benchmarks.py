"""The SRS-against-vanilla benchmark: ``--render`` reproduces saved tables; ``--quick`` runs.

``tests/data/bench-srs-quick*`` is a ``--quick`` run of the benchmark as it was before it
moved onto the library API (records in the old flat format, tables written by that run);
only the head of each records file gained the run's ``machine`` line, which the old script
printed from the machine rendering rather than keeping.

The caps and loss causes are recomputed from counts by ``serialized_bound``, so a change of
the ``sound`` bound changes them: re-pin with ``python benchmarks/srs_vs_vanilla.py --quick
--render --out tests/data/bench-srs-quick.md --plot /tmp/bench-srs-quick.png`` and check the
diff touches only those columns.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``benchmarks/srs`` importable as ``srs`` (with ``benchmarks/common.py`` as ``common``)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import srs.cli

    return srs


def _copy_records(dest: Path, stem: str) -> Path:
    for path in DATA.glob("bench-srs-quick-sigma*.jsonl"):
        shutil.copy(path, dest / path.name.replace("bench-srs-quick", stem))
    return dest / f"{stem}.md"


def test_render_reproduces_the_saved_tables(
    bench: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plots: list[tuple[list[Any], Path]] = []
    monkeypatch.setattr(bench.cli, "plot", lambda cfgs, recs, path: plots.append((cfgs, path)))
    out = _copy_records(tmp_path, "srs")
    bench.cli.main(["--quick", "--render", "--out", str(out), "--plot", str(tmp_path / "p.png")])
    assert out.read_bytes() == (DATA / "bench-srs-quick.md").read_bytes()
    assert [[c.sigma for c in cfgs] for cfgs, _ in plots] == [[0.25, 0.5]]  # drawn in the slow test


def test_render_without_records_says_what_is_missing(bench: Any, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no saved records"):
        bench.cli.main(["--quick", "--render", "--out", str(tmp_path / "none.md")])


def test_records_round_trip_in_the_library_format(bench: Any, tmp_path: Path) -> None:
    from srs.records import load_records, save_records

    cfg, rec, minutes = load_records(DATA / "bench-srs-quick-sigma0.25.jsonl")
    first = rec["srs-1A-anchor"][0]
    assert first["certificate"]["extra"]["candidate"] >= 0  # upgraded from the flat format
    save_records(tmp_path / "r.jsonl", cfg, rec, minutes)
    again = load_records(tmp_path / "r.jsonl")
    assert again == (cfg, rec, minutes)
    head = json.loads((tmp_path / "r.jsonl").read_text().splitlines()[0])
    assert head["config"]["machine"] == cfg.machine != ""


def test_derived_bounds_follow_serialized_bound(bench: Any) -> None:
    """The paper / repro rows are the library's bounds on the sound run's counts."""
    from srs.records import load_records, with_derived

    from deqcert import create_noise
    from deqcert.certify.bounds import serialized_bound

    cfg, rec, _ = load_records(DATA / "bench-srs-quick-sigma0.25.jsonl")
    derived = with_derived(cfg, rec)
    noise = create_noise("gaussian", sigma=cfg.sigma)
    for bound in ("paper", "repro"):
        rows = derived[f"srs-1A-anchor-{bound}"]
        assert len(rows) == cfg.matrix_inputs
        for row, base in zip(rows, rec["srs-1A-anchor"], strict=False):
            p = serialized_bound(bound, base["counts"], cfg.n, cfg.alpha).p_lower
            assert row["p_lower"] == p and row["radius"] == noise.radius(p)
            assert row["bound"] == bound and row["sound"] is False


@pytest.mark.slow
def test_quick_run_writes_every_table_and_renders_them_again(bench: Any, tmp_path: Path) -> None:
    out = tmp_path / "run.md"
    small = ["--sigmas", "0.25", "--n", "200", "--n0", "20", "--batch", "100", "--workers", "1"]
    small += ["--inputs", "2", "--matrix-inputs", "2", "--ablation-inputs", "2"]
    small += ["--baseline-inputs", "1", "--ablation", "400", "1000", "--no-allocator"]
    args = ["--quick", *small, "--out", str(out), "--plot", str(tmp_path / "p.png")]
    bench.cli.main(args)
    text = out.read_text(encoding="utf-8")
    for title in ("Headline", "Full matrix", "Reference subset size K", "Where sound", "Share of"):
        assert f"#### {title}" in text
    for label in ("vanilla 30A (h_ref)", "SRS 1A warmup, sound", "SRS 1A anchor, sound"):
        assert f"| {label} |" in text
    assert "| vanilla 30A, n = K | 2 |" in text  # n = K = 8 at n = 200 (K scaled with n)
    assert "SRS 1A anchor, sound against vanilla 30A, n = K (K = 8): " in text
    for label in ("vanilla 1A", "vanilla 5A", "SRS 3A anchor", "SRS 1B anchor", "K=20"):
        assert label in text
    assert "paper bound (NOT sound)" in text and "repro bound (NOT sound)" in text
    assert (tmp_path / "p.png").stat().st_size > 0
    records = tmp_path / "run-sigma0.25.jsonl"
    assert json.loads(records.read_text().splitlines()[1])["certificate"]["n"] == 200
    out.rename(tmp_path / "first.md")
    bench.cli.main([*args, "--render"])
    assert out.read_bytes() == (tmp_path / "first.md").read_bytes()
