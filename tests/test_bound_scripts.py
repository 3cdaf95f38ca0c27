"""``benchmarks/bound_grid.py`` and ``benchmarks/bound_frontier.py`` on a few simulated runs."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from deqcert.certify import bounds

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def scripts(monkeypatch: pytest.MonkeyPatch) -> tuple[ModuleType, ModuleType]:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bound_frontier
    import bound_grid

    return bound_grid, bound_frontier


def test_the_two_frontier_cells_have_the_same_selection_votes(scripts: tuple) -> None:
    grid, frontier = scripts
    rates = []
    for p_a, eps in (frontier.X_CELL, frontier.Y_CELL):
        rng = np.random.default_rng(1)
        draws = [grid.simulate(p_a, eps, 2000, 100, 100, rng).selection_a for _ in range(2000)]
        rates.append(p_a * (1 - eps) + (1 - p_a) * eps)
        assert np.mean(draws) == pytest.approx(100 * rates[-1], abs=0.1)
    assert rates[0] == pytest.approx(rates[1])


@pytest.mark.parametrize("beta", [0.0, 0.4, 1.0])
def test_union_branch_is_the_library_branch_at_an_even_inner_split(
    scripts: tuple, beta: float
) -> None:
    grid, frontier = scripts
    name = {0.0: "sound-0.5", 1.0: "reference"}.get(beta, f"hybrid-{beta}")
    rng = np.random.default_rng(2)
    for p_a, eps in ((0.95, 0.0), (1.0, 0.05), (0.8, 0.01)):
        c = grid.simulate(p_a, eps, 5000, 200, 100, rng)
        ours = frontier.union_lower(c, 5000, 200, 0.001, beta, 0.5)
        lib = bounds.branch_lower(name, c.c_m, c.d, c.e, c.t, 5000, 200, 0.001).p_lower
        assert ours == pytest.approx(lib, abs=1e-12)


def test_frontier_prints_every_branch_and_a_verdict(
    scripts: tuple, capsys: pytest.CaptureFixture[str]
) -> None:
    _, frontier = scripts
    frontier.main(["--runs", "3", "--n", "4000", "--K", "200"])
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.split() and line.split()[0][0].isdigit()]
    inner = [b for b in frontier.BETAS if 0 < b < 1]
    assert len(rows) == 2 + len(inner) * len(frontier.INNER)
    assert lines[-1].startswith("largest a+b: ")


def test_grid_prints_every_cell_and_the_all_a_point(
    scripts: tuple, capsys: pytest.CaptureFixture[str]
) -> None:
    grid, _ = scripts
    grid.main(["--runs", "2", "--n", "4000", "--K", "200"])
    out = capsys.readouterr().out
    cells = [line for line in out.splitlines() if line[:6].strip().replace(".", "").isdigit()]
    assert len(cells) == len(grid.P_A) * len(grid.EPS)
    assert "branch reference" in out
