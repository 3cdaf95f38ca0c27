"""Conformance suite for fixed-point solvers (built-in or from a plugin).

A *factory* builds a solver from ``max_iter``, ``tol`` and ``stop_mode``
keyword options, e.g. ``lambda **kw: create_solver("anderson", **kw)``.
Every ``check_*`` function takes a factory and raises :class:`ConformanceError`
(an ``AssertionError``) naming what is wrong.  Run them all with
:func:`run_solver_conformance`, or parametrise a pytest test over
:func:`solver_conformance_cases`::

    @pytest.mark.parametrize("name, check", solver_conformance_cases())
    def test_my_solver(name, check):
        check(lambda **kw: MySolver(**kw))

The problems are contractive maps with known fixed points: a batched linear
map ``z = A_i z + b_i`` (``z* = (I - A_i)^{-1} b_i``) and
``z = tanh(W z + u_i)`` with ``||W|| < 1`` (reference from a long plain
iteration in float64).  For a map with Lipschitz constant ``L < 1`` a state
with residual ``r`` is within ``r / (1 - L)`` of the fixed point, which is
what the convergence checks assert.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from ..protocols import FixedPointSolver, SolverResult
from ..registry import create_solver
from ._checks import ConformanceError as ConformanceError
from ._checks import cases, declared_options, run_checks
from ._checks import expect as _expect

SolverFactory = Callable[..., FixedPointSolver]
Check = Callable[[SolverFactory], None]


class CountingMap:
    """Wraps a map; counts its calls and checks each gets the whole batch."""

    def __init__(self, f: Callable[[Tensor], Tensor], batch_shape: tuple[int, ...]) -> None:
        self.f = f
        self.shape = batch_shape
        self.calls = 0

    def __call__(self, z: Tensor) -> Tensor:
        _expect(
            tuple(z.shape) == self.shape,
            f"f must be called on the whole batch {self.shape}, got {tuple(z.shape)}",
        )
        self.calls += 1
        return self.f(z)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def symmetric_with_radius(
    radii: Tensor, dim: int, *, generator: torch.Generator, dtype: torch.dtype = torch.float64
) -> Tensor:
    """``(B, dim, dim)`` symmetric matrices, matrix ``i`` with spectral norm ``radii[i]``."""
    batch = radii.shape[0]
    q, _ = torch.linalg.qr(torch.randn(batch, dim, dim, generator=generator, dtype=torch.float64))
    eig = torch.rand(batch, dim, generator=generator, dtype=torch.float64) * 2 - 1
    eig = eig / eig.abs().amax(dim=1, keepdim=True) * radii.to(torch.float64).unsqueeze(1)
    return ((q * eig.unsqueeze(1)) @ q.transpose(1, 2)).to(dtype)


class LinearProblem:
    """``f(z) = A_i z + b_i`` per sample, ``||A_i|| = radii[i]``, on states of ``shape``."""

    def __init__(
        self,
        radii: list[float],
        shape: tuple[int, ...] = (6,),
        *,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ) -> None:
        gen = _generator(seed)
        self.batch = len(radii)
        self.shape = (self.batch, *shape)
        self.lipschitz = max(radii)
        dim = math.prod(shape)
        a = symmetric_with_radius(torch.tensor(radii), dim, generator=gen)
        b = torch.randn(self.batch, dim, generator=gen, dtype=torch.float64)
        eye = torch.eye(dim, dtype=torch.float64)
        z_star = torch.linalg.solve(eye - a, b.unsqueeze(2)).squeeze(2)
        self.a = a.to(device=device, dtype=dtype)
        self.b = b.to(device=device, dtype=dtype)
        self.z_star = z_star.to(device=device, dtype=dtype).view(self.shape)

    def select(self, index: int) -> LinearProblem:
        """The one-sample problem of sample ``index``."""
        solo = LinearProblem.__new__(LinearProblem)
        solo.batch, solo.lipschitz = 1, self.lipschitz
        solo.shape = (1, *self.shape[1:])
        solo.a, solo.b = self.a[index : index + 1], self.b[index : index + 1]
        solo.z_star = self.z_star[index : index + 1]
        return solo

    def __call__(self, z: Tensor) -> Tensor:
        flat = z.reshape(self.batch, -1, 1)
        return (torch.bmm(self.a, flat).squeeze(2) + self.b).view(self.shape)


class TanhProblem:
    """``f(z) = tanh(W z + u_i)`` with a shared ``W`` of spectral norm ``lipschitz``."""

    def __init__(
        self,
        batch: int = 4,
        dim: int = 16,
        lipschitz: float = 0.6,
        *,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ) -> None:
        gen = _generator(seed)
        self.shape = (batch, dim)
        self.lipschitz = lipschitz
        w = torch.randn(dim, dim, generator=gen, dtype=torch.float64)
        w = w / torch.linalg.matrix_norm(w, ord=2) * lipschitz
        u = torch.randn(batch, dim, generator=gen, dtype=torch.float64)
        self.w, self.u = w, u
        z = torch.zeros(batch, dim, dtype=torch.float64)
        for _ in range(2000):  # plain iteration: contraction 0.6 -> exact to float64
            z = self._map(z)
        self.z_star = z.to(device=device, dtype=dtype)
        self.w = w.to(device=device, dtype=dtype)
        self.u = u.to(device=device, dtype=dtype)

    def _map(self, z: Tensor) -> Tensor:
        return torch.tanh(z @ self.w.T + self.u)

    def __call__(self, z: Tensor) -> Tensor:
        return self._map(z)


def _error(result: SolverResult, z_star: Tensor) -> Tensor:
    return torch.linalg.vector_norm((result.z - z_star).flatten(1), dim=1)


def _check_result_types(result: SolverResult, z0: Tensor, where: str) -> None:
    batch = z0.shape[0]
    _expect(isinstance(result, SolverResult), f"{where}: solve must return a SolverResult")
    _expect(
        result.z.shape == z0.shape,
        f"{where}: z has shape {tuple(result.z.shape)}, expected {tuple(z0.shape)}",
    )
    _expect(result.z.dtype == z0.dtype, f"{where}: z dtype {result.z.dtype} != z0's {z0.dtype}")
    _expect(result.z.device == z0.device, f"{where}: z is on {result.z.device}, not {z0.device}")
    for name in ("residual", "steps", "converged"):
        value = getattr(result, name)
        _expect(
            isinstance(value, Tensor) and tuple(value.shape) == (batch,),
            f"{where}: {name} must be a ({batch},) tensor",
        )
    _expect(result.converged.dtype == torch.bool, f"{where}: converged must be bool")
    _expect(
        not result.steps.is_floating_point() and not result.steps.is_complex(),
        f"{where}: steps must be an integer tensor",
    )
    _expect(isinstance(result.nfe, int), f"{where}: nfe must be an int")


def _check_converges(
    factory: SolverFactory, problem: LinearProblem | TanhProblem, where: str
) -> None:
    for stop_mode, tol in (("abs", 1e-8), ("rel", 1e-9)):
        solver = factory(max_iter=400, tol=tol, stop_mode=stop_mode)
        z0 = torch.zeros(problem.shape, dtype=torch.float64)
        result = solver.solve(problem, z0)
        label = f"{where} (stop_mode={stop_mode!r}, tol={tol})"
        _check_result_types(result, z0, label)
        _expect(bool(result.converged.all()), f"{label}: not all samples converged")
        _expect(
            bool((result.residual <= tol).all()),
            f"{label}: converged samples report residual {result.residual.tolist()} > tol",
        )
        scale = 1.0 if stop_mode == "abs" else float(problem.z_star.flatten(1).norm(dim=1).max())
        bound = 1.01 * tol * (scale + 1) / (1 - problem.lipschitz)
        err = _error(result, problem.z_star)
        _expect(
            bool((err <= bound).all()),
            f"{label}: distance to the true fixed point {err.tolist()} exceeds {bound:.3g}",
        )


def check_converges_linear(factory: SolverFactory) -> None:
    """Converges to ``(I - A)^{-1} b`` on batched contractive linear maps (abs and rel)."""
    _check_converges(factory, LinearProblem([0.3, 0.7, 0.9], (8,)), "linear map")


def check_converges_nonlinear(factory: SolverFactory) -> None:
    """Converges to the fixed point of ``tanh(W z + u)``, ``||W|| = 0.6``."""
    _check_converges(factory, TanhProblem(), "tanh map")


def check_respects_max_iter(factory: SolverFactory) -> None:
    """Never evaluates ``f`` more than ``max_iter`` times; unconverged samples use all steps."""
    problem = LinearProblem([0.99, 0.98], (5,))
    for max_iter in (1, 2, 3, 7):
        solver = factory(max_iter=max_iter, tol=1e-12, stop_mode="abs")
        z0 = torch.zeros(problem.shape, dtype=torch.float64)
        f = CountingMap(problem, problem.shape)
        result = solver.solve(f, z0)
        where = f"max_iter={max_iter}"
        _check_result_types(result, z0, where)
        _expect(f.calls <= max_iter, f"{where}: f was called {f.calls} times")
        _expect(result.nfe == f.calls, f"{where}: nfe={result.nfe} but f ran {f.calls} times")
        _expect(not bool(result.converged.any()), f"{where}: converged to tol=1e-12 impossibly")
        _expect(
            bool((result.steps == max_iter).all()),
            f"{where}: unconverged samples report steps {result.steps.tolist()}",
        )
        moved = _error(result, z0) > 0
        _expect(bool(moved.all()), f"{where}: the state did not move (no real update)")


def check_warm_start_at_fixed_point(factory: SolverFactory) -> None:
    """Started at the fixed point, a solve takes at most one step and stays there."""
    for problem in (LinearProblem([0.5, 0.9], (7,)), TanhProblem(batch=3)):
        solver = factory(max_iter=30, tol=1e-6, stop_mode="rel")
        z0 = problem.z_star.clone()
        f = CountingMap(problem, tuple(z0.shape))
        result = solver.solve(f, z0)
        where = f"warm start on {type(problem).__name__}"
        _check_result_types(result, z0, where)
        _expect(f.calls <= 1, f"{where}: f was called {f.calls} times")
        _expect(bool((result.steps <= 1).all()), f"{where}: steps {result.steps.tolist()}")
        _expect(bool(result.converged.all()), f"{where}: not reported converged")
        err = float(_error(result, problem.z_star).max())
        _expect(err <= 1e-9, f"{where}: moved away from the fixed point by {err:.3g}")


def check_per_sample_freezing(factory: SolverFactory) -> None:
    """A fast sample stops early, is frozen, and gets the answer it would get alone."""
    problem = LinearProblem([0.05, 0.8, 0.3], (6,))
    z0 = torch.zeros(problem.shape, dtype=torch.float64)
    z0[2] = problem.z_star[2]  # already at its fixed point
    opts: dict[str, Any] = {"max_iter": 300, "tol": 1e-8, "stop_mode": "abs"}
    result = factory(**opts).solve(problem, z0)
    _expect(bool(result.converged.all()), "freezing: not all samples converged")
    steps = result.steps.tolist()
    _expect(steps[2] <= 1, f"freezing: the sample at its fixed point took {steps[2]} steps")
    _expect(
        steps[0] < steps[1],
        f"freezing: the fast sample took {steps[0]} steps, the slow one {steps[1]}",
    )
    _expect(result.nfe >= steps[1], f"freezing: nfe={result.nfe} < slowest sample's steps")
    for i in (0, 2):
        solo = problem.select(i)
        alone = factory(**opts).solve(solo, z0[i : i + 1].clone())
        diff = float((alone.z[0] - result.z[i]).abs().max())
        _expect(
            diff <= 1e-12,
            f"freezing: sample {i} differs by {diff:.3g} from its solo solve "
            "(later iterations changed a frozen sample)",
        )
        _expect(
            int(alone.steps[0]) == steps[i],
            f"freezing: sample {i} took {steps[i]} steps in the batch, {int(alone.steps[0])} alone",
        )


def check_nfe_exact(factory: SolverFactory) -> None:
    """``nfe`` equals the number of calls of ``f``, whether the solve converges or not."""
    problem = TanhProblem(batch=5, dim=10, lipschitz=0.8, seed=3)
    for max_iter, tol in ((50, 1e-6), (4, 1e-12), (1, 1e-12)):
        for stop_mode in ("abs", "rel"):
            f = CountingMap(problem, problem.shape)
            z0 = torch.zeros(problem.shape, dtype=torch.float64)
            result = factory(max_iter=max_iter, tol=tol, stop_mode=stop_mode).solve(f, z0)
            where = f"nfe (max_iter={max_iter}, tol={tol}, stop_mode={stop_mode!r})"
            _expect(result.nfe == f.calls, f"{where}: nfe={result.nfe}, f ran {f.calls} times")
            _expect(
                int(result.steps.max()) <= result.nfe,
                f"{where}: a sample took {int(result.steps.max())} steps with nfe={result.nfe}",
            )


def _halved_tanh(c: Tensor) -> Callable[[Tensor], Tensor]:
    """``z -> tanh(z) / 2 + c``, a contraction (factor 1/2) of any shape."""
    return lambda z: 0.5 * torch.tanh(z) + c


def check_state_shapes(factory: SolverFactory) -> None:
    """Works on any ``(B, ...)`` state and dtype; results match ``z0``'s shape, dtype, device."""
    for shape in ((3,), (3, 5), (2, 3, 4, 5), (1, 2, 2)):
        for dtype in (torch.float32, torch.float64):
            gen = _generator(len(shape))
            c = torch.randn(shape, generator=gen).to(dtype)
            z0 = torch.randn(shape, generator=gen).to(dtype)
            where = f"state shape {shape}, {dtype}"
            result = factory(max_iter=60, tol=1e-4, stop_mode="rel").solve(_halved_tanh(c), z0)
            _check_result_types(result, z0, where)
            _expect(bool(result.converged.all()), f"{where}: did not converge")
            _expect(bool(torch.isfinite(result.z).all()), f"{where}: non-finite state")


def check_degenerate_maps(factory: SolverFactory) -> None:
    """Constant and exactly repeating maps (singular histories) give finite, exact answers."""
    c = torch.randn(4, 3, 3, generator=_generator(7), dtype=torch.float64)
    result = factory(max_iter=100, tol=1e-10, stop_mode="abs").solve(
        lambda z: c.clone(), torch.zeros_like(c)
    )
    _expect(bool(torch.isfinite(result.z).all()), "constant map: non-finite state")
    _expect(bool(result.converged.all()), "constant map: did not converge")
    _expect(bool(torch.allclose(result.z, c)), "constant map: wrong fixed point")
    # z -> -z + 2c (period-2 orbit from z0 != c): every f-difference is +-(z0 - c)
    z0 = torch.zeros_like(c)
    result = factory(max_iter=6, tol=1e-10, stop_mode="abs").solve(lambda z: 2 * c - z, z0)
    _expect(bool(torch.isfinite(result.z).all()), "reflection map: non-finite state")
    _expect(bool(torch.isfinite(result.residual).all()), "reflection map: non-finite residual")


def check_inference_and_grad_modes(factory: SolverFactory) -> None:
    """Runs under ``torch.inference_mode()`` and with autograd enabled (parameters with grad)."""
    problem = TanhProblem(batch=3, dim=8, dtype=torch.float32)
    z0 = torch.zeros(problem.shape)
    with torch.inference_mode():
        result = factory(max_iter=40, tol=1e-5, stop_mode="rel").solve(problem, z0)
    _expect(bool(result.converged.all()), "inference_mode: did not converge")
    w = problem.w.clone().requires_grad_(True)
    with torch.enable_grad():
        result = factory(max_iter=40, tol=1e-5, stop_mode="rel").solve(
            lambda z: torch.tanh(z @ w.T + problem.u), z0
        )
    _expect(bool(result.converged.all()), "grad mode: did not converge")
    _expect(bool(torch.isfinite(result.z).all()), "grad mode: non-finite state")


def check_describe(factory: SolverFactory) -> None:
    """``describe()`` is a dict with the solver's name and its options."""
    info = factory(max_iter=7, tol=1e-4, stop_mode="abs").describe()
    _expect(isinstance(info, dict) and isinstance(info.get("name"), str), "describe(): no name")
    for key, value in (("max_iter", 7), ("tol", 1e-4), ("stop_mode", "abs")):
        if key in info:
            _expect(info[key] == value, f"describe(): {key}={info[key]!r}, expected {value!r}")


CHECKS: dict[str, Check] = {
    "converges_linear": check_converges_linear,
    "converges_nonlinear": check_converges_nonlinear,
    "respects_max_iter": check_respects_max_iter,
    "warm_start_at_fixed_point": check_warm_start_at_fixed_point,
    "per_sample_freezing": check_per_sample_freezing,
    "nfe_exact": check_nfe_exact,
    "state_shapes": check_state_shapes,
    "degenerate_maps": check_degenerate_maps,
    "inference_and_grad_modes": check_inference_and_grad_modes,
    "describe": check_describe,
}
"""Every conformance check, by name."""


def solver_conformance_cases() -> Iterator[tuple[str, Check]]:
    """``(name, check)`` pairs, for ``pytest.mark.parametrize``."""
    return cases(CHECKS)


def registered_solver(name: str) -> SolverFactory:
    """A factory of the registered solver ``name``, with its ``conformance_options``."""
    declared = declared_options("solver", name)
    return lambda **options: create_solver(name, **{**declared, **options})


def run_solver_conformance(factory: SolverFactory) -> None:
    """Run every check on ``factory``; raise :class:`ConformanceError` at the first failure."""
    run_checks(CHECKS, factory)
