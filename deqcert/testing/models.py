"""Conformance suite for equilibrium models (built-in or from a plugin).

A *factory* is a callable with no arguments that builds a fresh (untrained)
model, e.g. ``lambda: create_model("mlpdeq", image_size=8, hidden=8)``; keep
it small, the checks solve it many times.  Every ``check_*`` function takes
a factory and raises :class:`ConformanceError` naming what is wrong.  Run
them all with :func:`run_model_conformance`, or parametrise a pytest test
over :func:`model_conformance_cases`::

    @pytest.mark.parametrize("name, check", model_conformance_cases())
    def test_my_model(name, check):
        check(lambda: MyModel(image_size=8))

Besides :class:`~deqcert.protocols.EquilibriumModel` the suite needs what
the rest of deqcert relies on: ``input_shape`` (the ``(C, H, W)`` of one
input, which certifiers check inputs against), per-sample computations in
eval mode (the certifiers' votes are independent only if a sample's solve
does not depend on its batch), and, for a registered model, a checkpoint
round trip (``options`` recorded, weights restored).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import DeqcertError
from ..protocols import EquilibriumModel, FixedPointSolver
from ..registry import create_model, create_solver
from ._checks import Check, cases, declared_options, expect, run_checks
from ._checks import ConformanceError as ConformanceError

ModelFactory = Callable[[], Any]

BATCH = 3


def _solver() -> FixedPointSolver:
    """The solver the checks use: Anderson, 100 steps, relative tolerance 1e-4."""
    solver: FixedPointSolver = create_solver("anderson", max_iter=100, tol=1e-4, stop_mode="rel")
    return solver


def _model(factory: ModelFactory, dtype: torch.dtype = torch.float32) -> Any:
    """A fresh model from ``factory`` in eval mode and ``dtype``, its input shape checked."""
    model = factory()
    shape = getattr(model, "input_shape", None)
    expect(
        isinstance(shape, tuple) and len(shape) >= 1 and all(isinstance(s, int) for s in shape),
        f"input_shape must be the (C, H, W) tuple of one input, got {shape!r}",
    )
    if isinstance(model, nn.Module):
        model = model.to(dtype).eval()
    return model


def _inputs(model: Any, batch: int = BATCH, seed: int = 0, dtype: Any = None) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((batch, *model.input_shape), generator=gen, dtype=dtype or torch.float32)


def _fixed_point(model: Any, x: Tensor, solver: FixedPointSolver | None = None) -> Any:
    u = model.inject(x)
    return (solver or _solver()).solve(lambda z: model.f(z, u), model.init_state(u)), u


def _close(a: Tensor, b: Tensor) -> float:
    """Largest deviation of ``a`` from ``b`` relative to ``1 + |b|``."""
    return float(((a - b).abs() / (1.0 + b.abs())).max()) if a.numel() else 0.0


def check_protocol(factory: ModelFactory) -> None:
    """An ``nn.Module`` and EquilibriumModel with ``num_classes >= 2`` and an ``input_shape``."""
    model = _model(factory)
    expect(isinstance(model, nn.Module), f"a model must be a torch.nn.Module, got {type(model)}")
    expect(
        isinstance(model, EquilibriumModel),
        "not an EquilibriumModel (num_classes, inject, init_state, f, readout, forward)",
    )
    classes = model.num_classes
    expect(isinstance(classes, int) and classes >= 2, f"num_classes={classes!r}, expected >= 2")


def check_shapes(factory: ModelFactory) -> None:
    """``inject``, ``init_state``, ``f`` and ``readout`` keep the batch; logits are (B, C)."""
    model = _model(factory)
    with torch.no_grad():
        x = _inputs(model)
        u = model.inject(x)
        expect(isinstance(u, Tensor) and u.shape[0] == BATCH, "inject(x) must keep the batch")
        z0 = model.init_state(u)
        expect(
            isinstance(z0, Tensor) and z0.shape[0] == BATCH and z0.is_floating_point(),
            "init_state(u) must be a floating-point (B, ...) state",
        )
        z1 = model.f(z0, u)
        expect(
            tuple(z1.shape) == tuple(z0.shape) and z1.dtype == z0.dtype,
            f"f(z, u) has shape {tuple(z1.shape)} {z1.dtype}, the state {tuple(z0.shape)} "
            f"{z0.dtype}",
        )
        expect(bool(torch.isfinite(z1).all()), "f(init_state(u), u) is not finite")
        logits = model.readout(z1)
        want = (BATCH, model.num_classes)
        got = tuple(logits.shape)
        expect(got == want, f"readout(z) has shape {got}, not {want}")
        expect(bool(torch.isfinite(logits).all()), "readout(z) is not finite")


def check_fixed_point(factory: ModelFactory) -> None:
    """Anderson converges from ``init_state``, and ``f(z*) = z*`` there (relative 1e-3)."""
    model = _model(factory)
    with torch.no_grad():
        result, u = _fixed_point(model, _inputs(model, batch=4))
        expect(
            bool(result.converged.all()),
            f"anderson (100 steps, rel tol 1e-4) did not converge: residuals "
            f"{result.residual.tolist()}; an untrained model should be contractive enough",
        )
        fz = model.f(result.z, u)
        gap = (fz - result.z).flatten(1).norm(dim=1)
        scale = fz.flatten(1).norm(dim=1)
        expect(
            bool((gap <= 1e-3 * scale + 1e-6).all()),
            f"||f(z*) - z*|| = {gap.tolist()} at the solver's fixed point (||f(z*)|| = "
            f"{scale.tolist()})",
        )


def check_forward_matches_members(factory: ModelFactory) -> None:
    """``forward(x, solver, z0)`` reads out ``solver`` on ``f`` from ``z0`` (or ``init_state``)."""
    model = _model(factory, torch.float64)
    x = _inputs(model, dtype=torch.float64)
    with torch.no_grad():
        result, u = _fixed_point(model, x)
        expected = model.readout(result.z)
        logits = model(x, _solver())
        err = _close(logits, expected)
        expect(err <= 1e-8, f"forward(x, solver) differs from readout(z*) by {err:.3g}")
        one_step = model(x, create_solver("naive", max_iter=1), result.z)
        err = _close(one_step, model.readout(model.f(result.z, u)))
        expect(err <= 1e-8, f"forward(x, solver, z0) ignores z0 (differs by {err:.3g})")
        default = model(x)
        expect(
            tuple(default.shape) == (BATCH, model.num_classes)
            and bool(torch.isfinite(default).all()),
            "forward(x) without a solver must return finite (B, num_classes) logits",
        )


def check_batch_independence(factory: ModelFactory) -> None:
    """In eval mode each sample's injection, map, logits and solve ignore the rest of the batch."""
    model = _model(factory, torch.float64)
    x = _inputs(model, batch=4, dtype=torch.float64)
    with torch.no_grad():
        u = model.inject(x)
        z0 = model.init_state(u)
        noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(1))
        z = z0 + 0.1 * noise.to(z0.dtype)
        fz = model.f(z, u)
        logits = model.readout(fz)
        solved = model(x, _solver())
        for i in (0, 3):
            alone = slice(i, i + 1)
            ui = model.inject(x[alone])
            for what, batched, single in (
                ("inject", u[alone], ui),
                ("f", fz[alone], model.f(z[alone], ui)),
                ("readout", logits[alone], model.readout(fz[alone])),
                ("a full solve", solved[alone], model(x[alone], _solver())),
            ):
                err = _close(batched, single)
                expect(
                    err <= 1e-7,
                    f"{what} of sample {i} changes by {err:.3g} when the batch changes "
                    "(batch statistics in eval mode?)",
                )


def check_eval_determinism(factory: ModelFactory) -> None:
    """In eval mode the same input gives the same logits, and nothing in the model changes."""
    model = _model(factory)
    x = _inputs(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        first = model(x, _solver())
        second = model(x, _solver())
    expect(torch.equal(first, second), "two eval-mode forward passes of one input differ")
    after = model.state_dict()
    for key, value in before.items():
        expect(torch.equal(after[key], value), f"evaluating changed the model's {key!r}")


def check_follows_dtype(factory: ModelFactory) -> None:
    """Converted with ``.double()``, the model computes in float64 (the verified check does)."""
    model = _model(factory, torch.float64)
    with torch.no_grad():
        logits = model(_inputs(model, dtype=torch.float64), _solver())
    expect(logits.dtype == torch.float64, f"a float64 model gave {logits.dtype} logits")


def check_trainable(factory: ModelFactory) -> None:
    """Gradients of the logits through one ``f`` step reach the parameters, finite."""
    model = factory()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    expect(bool(params), "the model has no trainable parameters")
    x = _inputs(model)
    u = model.inject(x)
    z = model.f(model.init_state(u), u)
    model.readout(model.f(z, u)).square().mean().backward()
    grads = [p.grad for p in params if p.grad is not None]
    expect(bool(grads), "no parameter received a gradient through inject, f and readout")
    expect(all(bool(torch.isfinite(g).all()) for g in grads), "non-finite parameter gradients")
    expect(any(bool(g.abs().sum() > 0) for g in grads), "all parameter gradients are zero")


def check_checkpoint_round_trip(factory: ModelFactory) -> None:
    """``save_checkpoint`` then ``load_checkpoint`` rebuild the model with the same logits."""
    from ..checkpoint import load_checkpoint, save_checkpoint

    model = _model(factory)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.safetensors"
        try:
            save_checkpoint(model, path)
            loaded = load_checkpoint(path)
        except DeqcertError as exc:
            raise ConformanceError(f"checkpoint round trip failed: {exc}") from None
    x = _inputs(model)
    with torch.no_grad():
        err = _close(loaded(x, _solver()), model(x, _solver()))
    expect(err <= 1e-6, f"the reloaded model's logits differ by {err:.3g}")


def check_describe(factory: ModelFactory) -> None:
    """``describe()``, where a model has one, is a JSON-able dict with its name."""
    model = factory()
    if not hasattr(model, "describe"):
        return
    info: dict[str, Any] = model.describe()
    expect(isinstance(info, dict) and isinstance(info.get("name"), str), "describe(): no name")
    try:
        json.dumps(info, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConformanceError(f"describe() is not JSON-serialisable: {exc}") from None
    expect(info == factory().describe(), "two models built alike describe differently")


CHECKS: dict[str, Check] = {
    "protocol": check_protocol,
    "shapes": check_shapes,
    "fixed_point": check_fixed_point,
    "forward_matches_members": check_forward_matches_members,
    "batch_independence": check_batch_independence,
    "eval_determinism": check_eval_determinism,
    "follows_dtype": check_follows_dtype,
    "trainable": check_trainable,
    "checkpoint_round_trip": check_checkpoint_round_trip,
    "describe": check_describe,
}
"""Every model conformance check, by name."""


def model_conformance_cases() -> Iterator[tuple[str, Check]]:
    """``(name, check)`` pairs, for ``pytest.mark.parametrize``."""
    return cases(CHECKS)


def registered_model(name: str, seed: int = 0) -> ModelFactory:
    """A factory of the registered model ``name`` (``conformance_options``, weights from ``seed``).

    The global random state is left as it was.
    """
    declared = declared_options("model", name)

    def factory() -> Any:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return create_model(name, **declared)

    return factory


def run_model_conformance(factory: ModelFactory) -> None:
    """Run every check on ``factory``; raise :class:`ConformanceError` at the first failure."""
    run_checks(CHECKS, factory)
