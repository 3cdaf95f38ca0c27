"""Machinery shared by the certifiers: component specs, input checks, batched noisy solves.

Everything here is per *batch*: noise is drawn for a whole batch on the
input's device, the batch is solved in one call, and predictions are counted
with ``bincount`` on the device, so the certifiers' loops run once per batch,
never once per sample.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from .. import defaults
from ..errors import DataError
from ..options import ComponentOptions
from ..protocols import ABSTAIN, EquilibriumModel, FixedPointSolver, NoiseSampler, SolverResult
from ..solvers._common import RowwiseMap, row_evaluations
from ..specs import NoiseOption, SolverOption, as_component, component_field
from . import bounds


def as_noise(spec: Any) -> NoiseSampler:
    """A :class:`~deqcert.protocols.NoiseSampler` from an object or a spec."""
    return as_component("noise", spec)  # type: ignore[no-any-return]


def as_solver(spec: Any) -> FixedPointSolver:
    """A :class:`~deqcert.protocols.FixedPointSolver` from an object or a spec."""
    return as_component("solver", spec)  # type: ignore[no-any-return]


def solver_field(description: str, **options: Any) -> Any:
    """A solver option defaulting to Anderson with ``options`` (see ``specs.component_field``)."""
    return component_field("solver", description, {"name": "anderson", **options})


class SmoothingOptions(ComponentOptions):
    """Options every certifier shares: noise, solver, sample sizes, ``alpha`` and batch size.

    A certifier's options model subclasses this one, adds its own options and
    may re-declare ``solver`` (its default and meaning differ by certifier;
    here it is the full solve from ``init_state`` that defines ``h_ref``).
    """

    noise: NoiseOption = Field(description="Noise sampler or {'name': ..., **options} spec.")
    solver: SolverOption = solver_field(
        "The solver defining h_ref, run from init_state on every sample.", max_iter=30, tol=1e-3
    )
    n0: int = Field(defaults.N0, ge=1, description="Selection samples.")
    n: int = Field(defaults.N, ge=1, description="Estimation samples.")
    alpha: float = Field(defaults.ALPHA, gt=0, lt=1, description="Total failure probability.")
    batch_size: int = Field(
        defaults.BATCH,
        ge=1,
        description="Noisy samples solved together (serialized: parallel chains).",
    )


def describe(component: Any) -> dict[str, Any]:
    """``component.describe()`` if it has one, else its class name."""
    if hasattr(component, "describe"):
        return dict(component.describe())
    return {"name": type(component).__name__}


def batch_sizes(total: int, batch_size: int) -> Iterator[int]:
    """Sizes of the batches covering ``total`` samples; the last one may be short."""
    full, rest = divmod(total, batch_size)
    yield from [batch_size] * full
    if rest:
        yield rest


def check_input(model: EquilibriumModel, x: Any, generator: torch.Generator) -> None:
    """Raise :class:`DataError` unless ``x`` is one finite ``(C, H, W)`` input for ``model``."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise DataError(f"the input must be a floating-point tensor, got {_kind(x)}")
    expected = getattr(model, "input_shape", None)
    if expected is not None and tuple(x.shape) != tuple(expected):
        raise DataError(f"expected one input of shape {tuple(expected)}, got {tuple(x.shape)}")
    if x.dim() < 1:
        raise DataError("the input must have at least one dimension, e.g. (C, H, W)")
    if not bool(torch.isfinite(x).all()):
        raise DataError("the input contains NaN or infinite values")
    if x.device.type != generator.device.type:
        raise DataError(
            f"the input is on {x.device} but the generator on {generator.device}; "
            "create the generator on the input's device"
        )


def _kind(x: Any) -> str:
    if isinstance(x, Tensor):
        return f"a {x.dtype} tensor"
    return type(x).__name__


@contextmanager
def evaluating(model: Any) -> Iterator[None]:
    """Evaluation mode and ``torch.inference_mode`` for the block.

    Every submodule's training flag is restored afterwards, exactly as it was.
    """
    modules = list(model.modules()) if hasattr(model, "modules") else []
    modes = [module.training for module in modules]
    if hasattr(model, "eval"):
        model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        for module, mode in zip(modules, modes, strict=True):
            module.training = mode


def noisy_batch(x: Tensor, noise: NoiseSampler, size: int, generator: torch.Generator) -> Tensor:
    """``size`` noisy copies ``x + e_j`` of ``x``, with the noise drawn on ``x``'s device."""
    e = noise.sample((size, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
    return e.add_(x)


def solve_batch(
    model: EquilibriumModel, solver: FixedPointSolver, xb: Tensor, z0: Tensor | None = None
) -> tuple[Tensor, SolverResult]:
    """Predicted classes ``(B,)`` of the batch ``xb`` and the solver's result.

    The solve starts from ``z0`` when given (a chain's state), else from
    ``model.init_state(u)`` (the zero start that defines ``h_ref``).
    """
    return solve_injected(model, solver, model.inject(xb), z0)


def solve_injected(
    model: EquilibriumModel, solver: FixedPointSolver, u: Tensor, z0: Tensor | None = None
) -> tuple[Tensor, SolverResult]:
    """:func:`solve_batch` from the injections ``u = model.inject(xb)``, already computed.

    The map handed to the solver is a :class:`~deqcert.solvers._common.RowwiseMap`
    over ``u``: the model runs in eval mode (see :func:`evaluating`), so its rows
    do not interact, and a solver with ``compact=True`` may evaluate it on the
    unconverged rows only.  Plain solvers just call it on the batch.
    """
    start = model.init_state(u) if z0 is None else z0
    result = solver.solve(RowwiseMap(model.f, u), start)
    return model.readout(result.z).argmax(dim=1), result


def decide(candidate: int, p_lower: float, noise: NoiseSampler) -> tuple[int, float]:
    """``(prediction, radius)``: abstain (``ABSTAIN``, 0) unless ``p_lower > 1/2``.

    At ``p_lower = 1/2`` exactly a tie with another class is not excluded, so
    nothing is certified (certification.md says ``< 1/2``; this is the strict side).
    """
    if p_lower > 0.5:
        return candidate, float(noise.radius(p_lower))
    return ABSTAIN, 0.0


def cap_fields(
    p_cap: float, p_lower: float, prediction: int, noise: NoiseSampler
) -> dict[str, Any]:
    """``radius_cap`` (the radius at ``p_lower = p_cap``) and ``at_cap`` for a certificate.

    ``p_cap`` is the bound's own value on perfect counts (see
    :func:`~deqcert.certify.bounds.bound_cap`); a radius is at the cap when its
    ``p_lower`` reached it (the same formula on the same counts gives the same
    float, so the comparison allows only rounding).
    """
    radius_cap = float(noise.radius(p_cap)) if p_cap > 0.5 else 0.0
    at_cap = prediction != ABSTAIN and p_lower >= p_cap * (1.0 - 1e-12)
    return {"radius_cap": radius_cap, "at_cap": bool(at_cap)}


def clopper_pearson_cap(options: Any, p_lower: float, prediction: int) -> dict[str, Any]:
    """:func:`cap_fields` of the plain Clopper-Pearson bound: all ``options.n`` votes for ``A``."""
    p_cap = bounds.clopper_pearson_lower(options.n, options.n, options.alpha)
    return cap_fields(p_cap, p_lower, prediction, options.noise)


def class_counts(predictions: Tensor, num_classes: int) -> Tensor:
    """``(num_classes,)`` counts of each class among ``predictions``."""
    return torch.bincount(predictions, minlength=num_classes)


@dataclass
class SolveLog:
    """Running totals of one kind of solve: samples, NFE, unconverged samples, residuals.

    NFE is counted per sample: ``result.nfe * batch``, or the rows actually
    evaluated when the solver compacted the batch (see
    :func:`~deqcert.solvers._common.row_evaluations`).  The unconverged count
    and the final residuals stay on the device until read, so logging never
    synchronises.
    """

    samples: int = 0
    nfe: int = 0
    _unconverged: Tensor | int = field(default=0, repr=False)
    _residuals: list[Tensor] = field(default_factory=list, repr=False)

    def add(self, result: SolverResult, batch: int) -> None:
        self.samples += batch
        self.nfe += row_evaluations(result, batch)
        self._unconverged = self._unconverged + (~result.converged).sum()
        self._residuals.append(result.residual.detach().reshape(-1)[:batch])

    @classmethod
    def merged(cls, *logs: SolveLog) -> SolveLog:
        """One log with the totals of ``logs``."""
        out = cls()
        for log in logs:
            out.samples += log.samples
            out.nfe += log.nfe
            out._unconverged = out._unconverged + log._unconverged
            out._residuals += log._residuals
        return out

    @property
    def unconverged(self) -> int:
        return int(self._unconverged)

    @property
    def unconverged_fraction(self) -> float:
        return self.unconverged / self.samples if self.samples else 0.0

    def residual_stats(self) -> tuple[float | None, float | None]:
        """Median and maximum of the samples' final residuals (None without samples)."""
        if not self._residuals:
            return None, None
        residuals = torch.cat(self._residuals).float()
        return float(residuals.median()), float(residuals.max())

    def summary(self) -> dict[str, float | int | None]:
        median, largest = self.residual_stats()
        return {
            "samples": self.samples,
            "nfe": self.nfe,
            "unconverged": self.unconverged,
            "unconverged_fraction": self.unconverged_fraction,
            "residual_median": median,
            "residual_max": largest,
        }


def chain_health(reference: SolveLog, serial: SolveLog) -> dict[str, float | None]:
    """Serialized smoothing's solver health: reference solves that hit ``max_iter`` (for
    those ``h_ref`` is the truncated solve) and how far the chains' states were from a
    fixed point (their last residuals; the chains stop after a step or two by design)."""
    median, largest = serial.residual_stats()
    return {
        "reference_unconverged": reference.unconverged_fraction,
        "chain_residual_median": median,
        "chain_residual_max": largest,
        "chain_unconverged": serial.unconverged_fraction,
    }
