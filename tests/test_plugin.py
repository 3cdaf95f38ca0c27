"""The example plugin package (plugins/deqcert-example) installed as a user would.

The package is built and installed with pip into a temporary directory (so
the shared virtualenv is left alone and the test is idempotent), that
directory is put on ``sys.path`` (and on ``PYTHONPATH`` for the CLI), and the
registries are refreshed. Then: the plugin's names are discovered, ``deqcert
list --json`` shows them, ``deqcert certify --solver km`` works, and the
``deqcert.testing`` conformance suite passes for ``km``.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from scipy.stats import norm as normal

import deqcert
from deqcert.registry import REGISTRIES
from deqcert.testing.solvers import Check, solver_conformance_cases

PLUGIN = Path(__file__).resolve().parent.parent / "plugins" / "deqcert-example"
DIST = "deqcert-example"


def _refresh_registries() -> None:
    importlib.invalidate_caches()
    for registry in REGISTRIES.values():
        registry.refresh()


def _build_isolation_flags() -> list[str]:
    """Build with the venv's setuptools when it is recent enough (>= 77), else isolated."""
    try:
        import setuptools
    except ImportError:
        return []
    major, minor = (int(part) for part in setuptools.__version__.split(".")[:2])
    return ["--no-build-isolation"] if (major, minor) >= (77, 0) else []


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Install the plugin into a fresh directory and make it importable."""
    root = tmp_path_factory.mktemp("plugin")
    source = root / "src"
    shutil.copytree(
        PLUGIN, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    site = root / "site"
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-input",
        "--disable-pip-version-check", *_build_isolation_flags(), "--target", str(site),
        str(source),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"pip install failed:\n{done.stdout}\n{done.stderr}"
    sys.path.insert(0, str(site))
    _refresh_registries()
    try:
        yield site
    finally:
        sys.path.remove(str(site))
        for name in [m for m in sys.modules if m.split(".")[0] == "deqcert_example"]:
            del sys.modules[name]
        _refresh_registries()


def _cli(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("deqcert")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "deqcert.cli"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"  # tiny batches on a shared machine
    env.pop("RANK", None)
    env.pop("SLURM_ARRAY_TASK_ID", None)
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )


def test_plugin_components_are_discovered(plugin_site: Path) -> None:
    assert "km" in deqcert.list_solvers()
    assert "gaussian-linf" in deqcert.list_noises()
    origins = {
        entry.name: entry.origin
        for kind in ("solver", "noise")
        for entry in REGISTRIES[kind].entries(load=True)
    }
    assert origins["km"] == DIST and origins["gaussian-linf"] == DIST
    assert origins["anderson"] == "deqcert"


def test_cli_list_shows_the_plugin(plugin_site: Path, tmp_path: Path) -> None:
    done = _cli(plugin_site, "list", "--json", "--check", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = {(row["group"], row["name"]): row for row in json.loads(done.stdout)}
    for key in (("deqcert.solvers", "km"), ("deqcert.noise", "gaussian-linf")):
        assert key in rows, f"{key} missing from deqcert list --json"
        assert rows[key]["origin"] == DIST
        assert rows[key]["error"] is None


def test_cli_certifies_with_the_plugin_solver_and_noise(
    plugin_site: Path, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "tiny.safetensors"
    torch.manual_seed(0)
    deqcert.save_checkpoint(deqcert.create_model("mlpdeq", hidden=16), checkpoint, {"sigma": 0.5})
    out = tmp_path / "run.jsonl"
    done = _cli(
        plugin_site, "certify", "--checkpoint", str(checkpoint), "--solver", "km",
        "--noise", "gaussian-linf", "--set", "noise.dim=784", "--set", "solver.alpha=0.7",
        "--indices", "0-1", "--n0", "10", "--n", "60", "--batch", "30",
        "--set", "certifier.reference_samples=10", "--out", str(out), "--quiet",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    header, *records = (json.loads(line) for line in out.read_text().splitlines())
    assert header["config"]["solver"]["name"] == "km"
    assert header["config"]["solver"]["alpha"] == 0.7
    assert header["config"]["noise"] == {"name": "gaussian-linf", "sigma": 0.5, "dim": 784}
    assert [r["index"] for r in records] == [0, 1]
    for record in records:
        certificate = record["certificate"]
        assert certificate["solvers"]["solver"]["name"] == "km"
        assert certificate["norm"] == "linf"
        assert certificate["nfe"] > 0
        if record["prediction"] == deqcert.ABSTAIN:
            assert record["radius"] == 0.0
        else:
            expected = 0.5 * normal.ppf(record["p_lower"]) / 28.0
            assert math.isclose(record["radius"], expected, rel_tol=1e-9)


@pytest.mark.parametrize("name, check", list(solver_conformance_cases()))
def test_km_passes_the_solver_conformance_suite(
    plugin_site: Path, name: str, check: Check
) -> None:
    check(lambda **options: deqcert.create_solver("km", **options))


def test_km_options_are_validated(plugin_site: Path) -> None:
    for bad in ({"alpha": 0.0}, {"alpha": 1.5}, {"max_iter": 0}, {"stop_mode": "max"}):
        with pytest.raises(deqcert.OptionError):
            deqcert.create_solver("km", **bad)
    with pytest.raises(deqcert.OptionError, match="unknown option 'damping'"):
        deqcert.create_solver("km", damping=0.5)
    assert deqcert.create_solver("km").describe()["name"] == "km"


def test_km_averages_where_the_plain_iteration_cycles(plugin_site: Path) -> None:
    # f(z) = 2c - z is nonexpansive with fixed point c; z <- f(z) cycles between 0 and 2c
    c = torch.randn(3, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def reflect(z: torch.Tensor) -> torch.Tensor:
        return 2 * c - z

    options: dict[str, Any] = {"max_iter": 50, "tol": 1e-10, "stop_mode": "abs"}
    plain = deqcert.create_solver("km", alpha=1.0, **options).solve(reflect, torch.zeros_like(c))
    assert not bool(plain.converged.any())
    averaged = deqcert.create_solver("km", alpha=0.5, **options).solve(
        reflect, torch.zeros_like(c)
    )
    assert bool(averaged.converged.all())
    assert torch.allclose(averaged.z, c)
    assert averaged.nfe == 2  # one averaged step lands on c, the next evaluation confirms it


def test_gaussian_linf_radius_and_samples(plugin_site: Path) -> None:
    noise = deqcert.create_noise("gaussian-linf", sigma=0.25, dim=784)
    l2 = deqcert.create_noise("gaussian", sigma=0.25)
    assert noise.norm == "linf"
    assert noise.describe() == {"name": "gaussian-linf", "sigma": 0.25, "dim": 784, "norm": "linf"}
    for p in (0.6, 0.9, 0.999):
        assert math.isclose(noise.radius(p), l2.radius(p) / 28.0, rel_tol=1e-12)
    assert noise.radius(0.5) == 0.0 and noise.radius(0.3) == 0.0
    # the same draws as the built-in Gaussian: only the certificate differs
    draws = noise.sample((4, 1, 28, 28), generator=torch.Generator().manual_seed(1))
    same = l2.sample((4, 1, 28, 28), generator=torch.Generator().manual_seed(1))
    assert torch.equal(draws, same)
    with pytest.raises(deqcert.OptionError, match="dim"):
        noise.sample((4, 3, 32, 32), generator=torch.Generator().manual_seed(1))
    with pytest.raises(deqcert.OptionError):
        deqcert.create_noise("gaussian-linf", sigma=0.25)  # dim is required


def test_km_compaction_drops_finished_rows_without_changing_answers(plugin_site: Path) -> None:
    from deqcert.solvers import RowwiseMap

    gen = torch.Generator().manual_seed(2)
    rates = torch.tensor([0.05, 0.1, 0.2, 0.6], dtype=torch.float64).view(4, 1)
    targets = torch.randn(4, 6, generator=gen, dtype=torch.float64)

    def contraction(z: torch.Tensor, rate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return rate * z + (1 - rate) * target  # row i contracts at rate[i] towards target[i]

    results = {}
    for compact in (False, True):
        solver = deqcert.create_solver(
            "km", alpha=0.8, max_iter=200, tol=1e-9, stop_mode="abs", compact=compact
        )
        results[compact] = solver.solve(
            RowwiseMap(contraction, rates, targets), torch.zeros(4, 6, dtype=torch.float64)
        )
    plain, compacted = results[False], results[True]
    assert bool(compacted.converged.all())
    assert torch.equal(plain.steps, compacted.steps)
    assert torch.allclose(plain.z, compacted.z, atol=1e-12)
    assert compacted.evaluations < plain.evaluations  # the fast rows stopped costing evaluations
