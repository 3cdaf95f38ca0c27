"""Solver compaction (``compact=True``): same results, fewer rows of ``f`` evaluated."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from deqcert import create_certifier, create_solver
from deqcert.solvers.rowwise import RowwiseMap, row_evaluations
from deqcert.testing.oracles import LinearOracle
from deqcert.testing.solvers import CountingMap, TanhProblem

SOLVERS = ["naive", "anderson", "broyden", "chain"]


class SpreadProblem:
    """``z = tanh(c_i W z + u_i)``: row ``i`` contracts at ``c_i * 0.9``, so step counts vary."""

    def __init__(self, batch: int = 48, dim: int = 24, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(dim, dim, generator=g, dtype=torch.float64)
        self.w = 0.9 * w / torch.linalg.matrix_norm(w, 2)
        self.c = torch.rand(batch, 1, generator=g, dtype=torch.float64)
        self.u = torch.randn(batch, dim, generator=g, dtype=torch.float64)
        self.rows_seen: list[int] = []

    def fn(self, z: Tensor, c: Tensor, u: Tensor) -> Tensor:
        self.rows_seen.append(z.shape[0])
        return torch.tanh(c * (z @ self.w.T) + u)

    def map(self) -> RowwiseMap:
        return RowwiseMap(self.fn, self.c, self.u)


def _solve(name: str, compact: bool, frozen: Tensor | None = None) -> tuple[Any, list[int]]:
    problem = SpreadProblem()
    solver = create_solver(name, max_iter=60, tol=1e-9, compact=compact)
    z0 = torch.zeros(problem.u.shape, dtype=torch.float64)
    result = solver.solve(problem.map(), z0, frozen=frozen)
    return result, problem.rows_seen


@pytest.mark.parametrize("name", SOLVERS)
def test_compaction_changes_cost_not_results(name: str) -> None:
    full, rows_full = _solve(name, compact=False)
    compact, rows_compact = _solve(name, compact=True)
    assert bool(full.converged.all())  # the comparison is about converged states
    assert torch.allclose(compact.z, full.z, rtol=0, atol=1e-12)
    assert torch.equal(compact.steps, full.steps)
    assert torch.equal(compact.converged, full.converged)
    assert torch.allclose(compact.residual, full.residual, rtol=1e-6, atol=0)
    assert compact.nfe == full.nfe == len(rows_compact)
    assert set(rows_full) == {48} and min(rows_compact) < 48
    assert row_evaluations(full, 48) == full.nfe * 48
    assert row_evaluations(compact, 48) == sum(rows_compact) < full.nfe * 48
    # every row is evaluated until it converges; finished rows idle until a quarter are
    assert int(compact.steps.sum()) <= row_evaluations(compact, 48)


@pytest.mark.parametrize("name", ["anderson", "broyden"])
def test_compaction_with_a_mostly_frozen_batch(name: str) -> None:
    frozen = torch.ones(48, dtype=torch.bool)
    frozen[::5] = False  # 10 active rows: compacted before the first evaluation
    full, _ = _solve(name, compact=False, frozen=frozen)
    compact, rows = _solve(name, compact=True, frozen=frozen)
    assert rows[0] == 10 and max(rows) == 10
    assert torch.equal(compact.z[frozen], torch.zeros_like(compact.z[frozen]))
    assert torch.allclose(compact.z, full.z, rtol=0, atol=1e-12)
    assert torch.equal(compact.steps, full.steps) and bool(compact.converged.all())


def test_budget_exhausted_rows_match() -> None:
    """Rows still unconverged at max_iter return their last update, with or without compaction."""
    problem = SpreadProblem(seed=3)
    z0 = torch.zeros(problem.u.shape, dtype=torch.float64)
    out = [
        create_solver("anderson", max_iter=8, tol=1e-9, compact=c).solve(problem.map(), z0)
        for c in (False, True)
    ]
    assert not bool(out[0].converged.all()) and bool(out[0].converged.any())
    assert torch.allclose(out[1].z, out[0].z, rtol=0, atol=1e-12)
    assert torch.equal(out[1].converged, out[0].converged)


def test_plain_callables_are_evaluated_on_the_whole_batch() -> None:
    problem = TanhProblem(batch=6, dim=8, lipschitz=0.9, seed=2)
    f = CountingMap(problem, problem.shape)  # raises unless called on the whole batch
    z0 = torch.zeros(problem.shape, dtype=torch.float64)
    r = create_solver("anderson", tol=1e-8, compact=True).solve(f, z0)
    assert f.calls == r.nfe and row_evaluations(r, 6) == r.nfe * 6


@pytest.mark.parametrize("name", ["vanilla", "serialized"])
def test_certificates_do_not_depend_on_compaction(name: str) -> None:
    model, x = LinearOracle.with_p_a(0.8, 0.25)
    certs = []
    for compact in (False, True):
        # absolute residuals: samples with larger scores converge later, so rows finish apart
        solver = {"name": "naive", "max_iter": 200, "tol": 1e-3, "stop_mode": "abs"}
        solver["compact"] = compact
        options: dict[str, Any] = {"noise": {"name": "gaussian", "sigma": 0.25}, "n0": 20}
        options.update(n=300, batch_size=64, alpha=0.1)
        if name == "vanilla":
            options["solver"] = solver
        else:
            options.update(reference_solver=solver, reference_samples=100)
        cert = create_certifier(name, **options).certify(
            model, x, generator=torch.Generator().manual_seed(0)
        )
        certs.append(cert)
    plain, compact_cert = certs
    assert plain.counts == compact_cert.counts and plain.radius == compact_cert.radius
    assert compact_cert.nfe < plain.nfe
