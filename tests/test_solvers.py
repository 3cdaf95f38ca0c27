"""Solvers: specifics and the conformance suite itself (every registered solver runs it in
test_conformance.py)."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import Tensor

import deqcert
from deqcert import OptionError, SolverResult, UnknownNameError, create_solver
from deqcert.solvers.naive import NaiveSolver
from deqcert.testing.solvers import (
    ConformanceError,
    CountingMap,
    LinearProblem,
    TanhProblem,
    check_nfe_exact,
    check_per_sample_freezing,
    check_respects_max_iter,
    check_warm_start_at_fixed_point,
    run_solver_conformance,
)

SOLVERS = deqcert.list_solvers()


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny tensors: a second intra-op thread only adds synchronisation (slow on a busy box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def factory(name: str, **extra: Any) -> Any:
    return lambda **kw: create_solver(name, **{**extra, **kw})


def test_builtins_are_registered() -> None:
    assert {"naive", "anderson", "broyden", "chain"} <= set(SOLVERS)


@pytest.mark.parametrize(
    "name, extra",
    [("naive", {"damping": 0.7}), ("anderson", {"m": 2, "beta": 0.8}), ("broyden", {"memory": 2})],
)
def test_conformance_non_default_options(name: str, extra: dict[str, Any]) -> None:
    run_solver_conformance(factory(name, **extra))


# -- the suite can fail --------------------------------------------------------


class _NoFreeze:
    """Plain iteration that never freezes samples and stops on the slowest one."""

    def __init__(self, max_iter: int = 30, tol: float = 1e-3, stop_mode: str = "rel") -> None:
        self.max_iter, self.tol = max_iter, tol

    def solve(self, f: Any, z0: Tensor) -> SolverResult:
        z, k = z0, 0
        for k in range(1, self.max_iter + 1):  # noqa: B007
            fz = f(z)
            r = (fz - z).flatten(1).norm(dim=1)
            z = fz
            if bool((r <= self.tol).all()):
                break
        steps = torch.full((z0.shape[0],), k)
        return SolverResult(z, k, r, steps, r <= self.tol)

    def describe(self) -> dict[str, Any]:
        return {"name": "no-freeze"}


class _ExtraCall(_NoFreeze):
    """Evaluates f once more than it reports."""

    def solve(self, f: Any, z0: Tensor) -> SolverResult:
        f(z0)
        return super().solve(f, z0)


class _StartsWithUpdate(_NoFreeze):
    """Moves before measuring: a warm start at the fixed point costs two steps."""

    def solve(self, f: Any, z0: Tensor) -> SolverResult:
        r = super().solve(f, f(z0))
        r.nfe += 1
        r.steps += 1
        return r


@pytest.mark.parametrize(
    "broken, check",
    [
        (_NoFreeze, check_per_sample_freezing),
        (_ExtraCall, check_nfe_exact),
        (_ExtraCall, check_respects_max_iter),
        (_StartsWithUpdate, check_warm_start_at_fixed_point),
    ],
)
def test_suite_rejects_broken_solvers(broken: type, check: Any) -> None:
    with pytest.raises(ConformanceError):
        check(broken)


# -- options ------------------------------------------------------------------


@pytest.mark.parametrize("name", SOLVERS)
def test_unknown_option_is_named(name: str) -> None:
    with pytest.raises(OptionError, match="stop_mod"):
        create_solver(name, stop_mod="abs")


@pytest.mark.parametrize(
    "name, options, bad",
    [
        ("naive", {"stop_mode": "max"}, "stop_mode"),
        ("naive", {"max_iter": 0}, "max_iter"),
        ("naive", {"tol": 0.0}, "tol"),
        ("naive", {"damping": 0.0}, "damping"),
        ("naive", {"damping": 1.5}, "damping"),
        ("anderson", {"m": 0}, "m"),
        ("anderson", {"beta": 0.0}, "beta"),
        ("anderson", {"lam": -1.0}, "lam"),
        ("broyden", {"memory": 0}, "memory"),
        ("chain", {"solvers": []}, "solvers"),
        ("chain", {"solvers": [3]}, "solvers"),
        ("chain", {"solvers": [{"m": 3}]}, "solvers"),
    ],
)
def test_bad_option_values_rejected(name: str, options: dict[str, Any], bad: str) -> None:
    with pytest.raises(OptionError, match=f"'{bad}'"):
        create_solver(name, **options)


def test_chain_stage_errors() -> None:
    with pytest.raises(UnknownNameError, match="naive"):
        create_solver("chain", solvers=[{"name": "nope"}])
    with pytest.raises(OptionError, match="chain stage 'anderson'.*'mm'"):
        create_solver("chain", solvers=[{"name": "anderson", "mm": 3}])


@pytest.mark.parametrize("name", SOLVERS)
def test_describe_is_json(name: str) -> None:
    info = create_solver(name, max_iter=9).describe()
    assert info["name"] == name and info["max_iter"] == 9
    json.dumps(info)


# -- semantics ----------------------------------------------------------------


def test_warm_start_returns_f_of_z0_after_one_evaluation() -> None:
    problem = LinearProblem([0.5, 0.5], (4,))
    f = CountingMap(problem, problem.shape)
    r = create_solver("anderson", tol=1e-6).solve(f, problem.z_star)
    assert f.calls == r.nfe == 1 and r.steps.tolist() == [1, 1]
    assert torch.equal(r.z, problem(problem.z_star))


def test_max_iter_counts_updates() -> None:
    """``max_iter=T`` is T plain updates for naive: z_T = f^T(z0)."""
    problem = LinearProblem([0.9, 0.9], (4,))
    z = torch.zeros(problem.shape, dtype=torch.float64)
    r = create_solver("naive", max_iter=3, tol=1e-12).solve(problem, z)
    for _ in range(3):
        z = problem(z)
    assert r.nfe == 3 and torch.equal(r.z, z)


def test_damping() -> None:
    problem = LinearProblem([0.9], (4,))
    z0 = torch.zeros(problem.shape, dtype=torch.float64)
    r = create_solver("naive", max_iter=1, damping=0.25, tol=1e-12).solve(problem, z0)
    assert torch.allclose(r.z, 0.25 * problem(z0))


def test_iterate_respects_frozen_mask() -> None:
    problem = LinearProblem([0.5, 0.5, 0.5], (4,))
    z0 = torch.randn(problem.shape, dtype=torch.float64)
    frozen = torch.tensor([False, True, False])
    solver = create_solver("anderson", tol=1e-8)
    r = solver.solve(problem, z0, frozen=frozen)
    assert torch.equal(r.z[1], z0[1]) and r.steps[1] == 0 and bool(r.converged.all())
    assert torch.allclose(r.z[[0, 2]], problem.z_star[[0, 2]], atol=1e-6)


def test_anderson_beats_naive_on_slow_map() -> None:
    problem = TanhProblem(batch=4, dim=32, lipschitz=0.95, seed=1)
    z0 = torch.zeros(problem.shape, dtype=torch.float64)
    nfe = {
        name: create_solver(name, max_iter=500, tol=1e-8).solve(problem, z0).nfe
        for name in ("naive", "anderson", "broyden")
    }
    assert nfe["anderson"] < nfe["naive"] and nfe["broyden"] < nfe["naive"], nfe


# -- numerical safety -----------------------------------------------------------


def _reflection(c: Tensor) -> Any:
    return lambda z: 2 * c - z


def test_anderson_singular_gram_falls_back_to_plain_step() -> None:
    # z -> 2c - z from 0: g_0 = 2c, g_1 = -2c, so with lam=0 the Gram matrix is singular.
    c = torch.randn(3, 5, dtype=torch.float64)
    r = create_solver("anderson", lam=0.0, max_iter=2, tol=1e-12).solve(
        _reflection(c), torch.zeros_like(c)
    )
    assert torch.isfinite(r.z).all()
    assert torch.equal(r.z, torch.zeros_like(c))  # the plain step back from 2c
    # with regularisation the same history gives the exact fixed point c
    r = create_solver("anderson", max_iter=2, tol=1e-12).solve(_reflection(c), torch.zeros_like(c))
    assert torch.allclose(r.z, c)


@pytest.mark.parametrize("name", ["anderson", "broyden", "chain"])
def test_overflowing_history_stays_finite(name: str) -> None:
    # float32 states of size 1e25: the Gram/inner products overflow to inf
    z0 = torch.zeros(2, 64)
    r = create_solver(name, max_iter=6, tol=1e-6, stop_mode="abs").solve(
        lambda z: 0.5 * z + 1e25, z0
    )
    plain = create_solver("naive", max_iter=6, tol=1e-6, stop_mode="abs").solve(
        lambda z: 0.5 * z + 1e25, z0
    )
    assert torch.isfinite(r.z).all()
    assert torch.allclose(r.z, plain.z)


def test_nonfinite_sample_does_not_spoil_others() -> None:
    problem = LinearProblem([0.5, 0.5], (4,), dtype=torch.float32)

    def f(z: Tensor) -> Tensor:
        out = problem(z)
        out[0] = float("nan")
        return out

    for name in ("anderson", "broyden"):
        r = create_solver(name, max_iter=50, tol=1e-5).solve(f, torch.zeros(problem.shape))
        assert bool(r.converged[1]) and not bool(r.converged[0])
        assert torch.allclose(r.z[1], problem.z_star[1], atol=1e-4)


def test_broyden_small_memory_converges_with_bounded_buffers() -> None:
    problem = LinearProblem([0.95, 0.9], (30,))
    z0 = torch.zeros(problem.shape, dtype=torch.float64)
    solver = create_solver("broyden", memory=3, max_iter=400, tol=1e-9, stop_mode="abs")
    assert solver.make_update(z0, 400).s.shape == (2, 3, 30)  # bounded buffers
    assert solver.make_update(z0, 2).s.shape == (2, 1, 30)
    r = solver.solve(problem, z0)
    assert r.converged.all() and torch.allclose(r.z, problem.z_star, atol=1e-7)


# -- reuse of scratch buffers ------------------------------------------------------


@pytest.mark.parametrize("name", ["naive", "anderson", "broyden"])
def test_reused_solver_matches_fresh_one(name: str) -> None:
    """Scratch buffers kept between solves never leak into results."""
    big = TanhProblem(batch=6, dim=12, lipschitz=0.9, seed=4, dtype=torch.float32)
    small = TanhProblem(batch=3, dim=12, lipschitz=0.9, seed=5, dtype=torch.float32)
    opts = {"max_iter": 15, "tol": 1e-6}
    reused = create_solver(name, **opts)
    with torch.no_grad():
        first = reused.solve(big, torch.zeros(big.shape))
        kept = first.z.clone()
        second = reused.solve(small, torch.zeros(small.shape))
        with torch.inference_mode():
            third = reused.solve(big, torch.zeros(big.shape))
        fresh = create_solver(name, **opts).solve(small, torch.zeros(small.shape))
    assert torch.equal(first.z, kept)  # not overwritten by the later solves
    assert torch.equal(second.z, fresh.z) and second.nfe == fresh.nfe
    assert torch.equal(third.z, first.z)


@pytest.mark.parametrize("name", SOLVERS)
def test_solver_pickles(name: str) -> None:
    solver = create_solver(name, max_iter=7)
    problem = TanhProblem(batch=2, dim=4)
    with torch.no_grad():
        solver.solve(problem, torch.zeros(problem.shape, dtype=torch.float64))
    clone = pickle.loads(pickle.dumps(solver))
    assert clone.describe() == solver.describe()
    result = clone.solve(problem, torch.zeros(problem.shape, dtype=torch.float64))
    assert result.nfe <= 7


# -- chain ----------------------------------------------------------------------


def test_chain_hands_unconverged_samples_on() -> None:
    problem = LinearProblem([0.1, 0.9, 0.95], (6,))
    z0 = torch.zeros(problem.shape, dtype=torch.float64)
    opts = {"tol": 1e-8, "stop_mode": "abs"}
    stages = [{"name": "anderson", "max_iter": 4}, {"name": "naive"}]
    chain = create_solver("chain", solvers=stages, max_iter=300, **opts)
    r = chain.solve(problem, z0)
    first = create_solver("anderson", max_iter=4, **opts).solve(problem, z0)
    naive = create_solver("naive", max_iter=296, **opts)
    second = naive.solve(problem, first.z, frozen=first.converged)
    assert r.nfe == first.nfe + second.nfe
    expected_steps = first.steps + torch.where(first.converged, 0, second.steps)
    assert torch.equal(r.steps, expected_steps)
    assert torch.equal(r.z, torch.where(first.converged.view(-1, 1), first.z, second.z))
    assert r.converged.all()


def test_chain_accepts_solver_objects_and_foreign_solvers() -> None:
    problem = LinearProblem([0.3, 0.8], (5,))
    z0 = torch.zeros(problem.shape, dtype=torch.float64)
    foreign = _NoFreeze(max_iter=500, tol=1e-9)
    chain = create_solver(
        "chain", solvers=[NaiveSolver(max_iter=2), foreign], max_iter=100, tol=1e-9
    )
    f = CountingMap(problem, problem.shape)
    r = chain.solve(f, z0)
    assert r.nfe == f.calls and r.converged.all()
    assert torch.allclose(r.z, problem.z_star, atol=1e-7)


def test_chain_budget_is_total() -> None:
    problem = LinearProblem([0.99], (60,))
    z0 = torch.zeros(problem.shape, dtype=torch.float64)
    r = create_solver("chain", max_iter=25, tol=1e-12).solve(problem, z0)
    assert r.nfe == 25 and int(r.steps[0]) == 25


# -- autograd / devices ----------------------------------------------------------


@pytest.mark.parametrize("name", SOLVERS)
def test_backward_through_solve(name: str) -> None:
    problem = TanhProblem(batch=3, dim=8, dtype=torch.float32)
    w = problem.w.clone().requires_grad_(True)
    r = create_solver(name, max_iter=12, tol=1e-6).solve(
        lambda z: torch.tanh(z @ w.T + problem.u), torch.zeros(problem.shape)
    )
    r.z.sum().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", SOLVERS)
def test_cuda(name: str) -> None:
    problem = TanhProblem(batch=4, dim=16, dtype=torch.float32, device="cuda")
    z0 = torch.zeros(4, 16, device="cuda")
    r = create_solver(name, max_iter=100, tol=1e-5).solve(problem, z0)
    assert r.z.is_cuda and r.residual.is_cuda and r.converged.all()
