"""The public contract: protocols every component implements and the result types.

Built-ins and third-party plugins implement the same protocols; the registries
(:mod:`deqcert.registry`) hand them out by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # annotations only: importing deqcert (and starting the CLI) stays light
    import torch
    from torch import Tensor


@dataclass
class SolverResult:
    """Outcome of one batched fixed-point solve.

    Attributes:
        z: ``(B, ...)`` final states: for a converged sample ``f(z_k)`` of the
            iterate ``z_k`` whose residual met the tolerance (then frozen); for
            the others the last update.
        nfe: number of evaluations of ``f`` (calls on the batch) spent.
        residual: ``(B,)`` last residual measured per sample (of the iterate the
            returned state was computed from), in the solver's stop mode.
        steps: ``(B,)`` iterations each sample used before it converged or the
            budget ran out.
        converged: ``(B,)`` bool, residual at or below the tolerance.
    """

    z: Tensor
    nfe: int
    residual: Tensor
    steps: Tensor
    converged: Tensor


@runtime_checkable
class FixedPointSolver(Protocol):
    """Finds ``z`` with ``f(z) = z`` for a batch, starting from ``z0``.

    Options such as ``max_iter``, ``tol`` and ``stop_mode`` (``"abs"`` or
    ``"rel"``) are constructor options.  Device and dtype follow ``z0``.
    """

    def solve(self, f: Callable[[Tensor], Tensor], z0: Tensor) -> SolverResult: ...

    def describe(self) -> dict[str, Any]: ...


@runtime_checkable
class EquilibriumModel(Protocol):
    """A DEQ: ``logits = readout(z*)`` with ``z* = f(z*, inject(x))``.

    Implementations are ``torch.nn.Module`` subclasses; inputs are pixels in
    ``[0, 1]`` and any normalisation happens inside :meth:`inject`.
    """

    num_classes: int

    def inject(self, x: Tensor) -> Tensor: ...

    def init_state(self, u: Tensor) -> Tensor: ...

    def f(self, z: Tensor, u: Tensor) -> Tensor: ...

    def readout(self, z: Tensor) -> Tensor: ...

    def forward(
        self, x: Tensor, solver: FixedPointSolver | None = None, z0: Tensor | None = None
    ) -> Tensor: ...


@runtime_checkable
class NoiseSampler(Protocol):
    """Additive noise in pixel space and the certified radius it implies."""

    norm: str

    def sample(
        self,
        shape: Sequence[int],
        *,
        generator: torch.Generator,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor: ...

    def radius(self, p_lower: float) -> float: ...

    def describe(self) -> dict[str, Any]: ...


ABSTAIN = -1
"""Prediction value used when a certifier abstains."""


class _Outcome:
    """What :class:`Prediction` and :class:`Certificate` share: abstention and ``to_dict``."""

    prediction: int

    @property
    def abstained(self) -> bool:
        return self.prediction == ABSTAIN

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]


@dataclass
class Prediction(_Outcome):
    """Outcome of PREDICT: a class or :data:`ABSTAIN`."""

    prediction: int
    counts: dict[str, int]
    p_value: float
    n: int
    alpha: float
    nfe: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Certificate(_Outcome):
    """Outcome of CERTIFY, with everything needed to audit it.

    Attributes:
        prediction: certified class, or :data:`ABSTAIN` (-1).
        radius: certified radius in ``norm`` (0 when abstaining).
        p_lower: lower confidence bound on ``p_A`` used for the radius.
        counts: the counts the bound came from (e.g. ``n_A`` or ``C_m``, ``d``).
        n0, n: selection and estimation sample sizes.
        alpha: total failure probability; ``alpha_split`` how it was divided.
        bound: name of the bound (``clopper-pearson``, ``sound``, ``paper``,
            ``repro``); ``sound`` is False for bounds that are not valid.
        noise: the noise sampler's description (name, parameters, norm).
        solvers: solver names and step budgets (serialized, reference, ...).
        nfe: evaluations of ``f`` spent, counted per noisy sample.
        seconds: wall time.
        unconverged_fraction: share of samples whose final residual stayed
            above the solver's tolerance.
        extra: certifier-specific details.
    """

    prediction: int
    radius: float
    p_lower: float
    counts: dict[str, int]
    n0: int
    n: int
    alpha: float
    alpha_split: dict[str, float]
    bound: str
    sound: bool
    noise: dict[str, Any]
    norm: str
    solvers: dict[str, Any]
    nfe: int
    seconds: float
    unconverged_fraction: float
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Certifier(Protocol):
    """A smoothed classifier: certifies and predicts one input ``x`` of shape ``(C, H, W)``."""

    def certify(
        self, model: EquilibriumModel, x: Tensor, *, generator: torch.Generator
    ) -> Certificate: ...

    def predict(
        self, model: EquilibriumModel, x: Tensor, *, generator: torch.Generator
    ) -> Prediction: ...

    def describe(self) -> dict[str, Any]: ...
