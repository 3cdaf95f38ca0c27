"""``benchmarks/gpu.py`` runs end to end on the CPU (``--device cpu --quick``)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def _load() -> ModuleType:
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_gpu_benchmark_quick_on_the_cpu(tmp_path: Path) -> None:
    bench = _load()
    out = bench.main(["--device", "cpu", "--quick", "--no-warmup", "--out", str(tmp_path / "g.md")])
    text = out.read_text()
    assert text.startswith("# Certification cost per image on CPU: torch")
    data = json.loads(out.with_suffix(".json").read_text())
    rows = {(r["model"], r["method"]): r for r in data["rows"]}
    assert set(rows) == {(m, k) for m in bench.MODELS for k in bench.METHODS}
    for (model, method), row in rows.items():
        assert f"| {model} | {method} | 1 |" in text
        assert row["seconds_per_image"] > 0 and row["inputs"] == 1
    s = data["settings"]
    n0, n, k = s["n0"], s["n"], bench.scaled_k(s["k"], s["n"])
    assert s["batch"] >= n  # one batch per stage: the counts below are exact
    # random MDEQ-Large: every solve at its full budget, so the NFE is known in advance
    large = {m: rows[("mdeq-large", m)]["nfe_per_image"] for m in bench.METHODS}
    assert large["vanilla-30A"] == large["vanilla-ES"] == (n0 + n) * 30
    for method in ("srs-1N", "srs-1A", "srs-3A"):  # each stage's single batch is the warm-up
        assert large[method] == (n0 + n) * 10 + k * 30
    # the trained MNIST model stops early: fewer evaluations than the fixed 30 steps
    assert rows[("mnist", "vanilla-ES")]["nfe_per_image"] < (n0 + n) * 30
    assert rows[("mnist", "vanilla-30A")]["nfe_per_image"] == (n0 + n) * 30
    assert "n/a (random)" in text and "| 1.79 |" in text  # SRS-1A's paper figure beside ours


def test_unknown_model_is_one_clear_line() -> None:
    bench = _load()
    with pytest.raises(SystemExit, match="unknown model.*accepted: mnist, mdeq-large"):
        bench.main(["--device", "cpu", "--models", "imagenet"])
