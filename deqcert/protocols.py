"""The public contract: protocols every component implements and the result types.

Built-ins and third-party plugins implement the same protocols; the registries
(:mod:`deqcert.registry`) hand them out by name.  torch appears in annotations
only, so ``import deqcert`` (and the CLI's start) does not import it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # annotations only: importing the contract does not import torch
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
class BudgetedSolver(FixedPointSolver, Protocol):
    """Optional: a solver that accepts a per-call step budget, ``solve(f, z0, max_iter=T)``.

    A solver opts in with the class attribute ``accepts_max_iter = True``; its
    ``solve`` then takes a keyword ``max_iter`` (``None``: its own option) and
    spends at most ``min(T, its max_iter)`` steps.  Certifiers and the
    ``chain`` solver cap such solvers (test with :func:`accepts_budget`); other
    solvers run with their own budget.
    """

    accepts_max_iter: bool

    def solve(
        self, f: Callable[[Tensor], Tensor], z0: Tensor, *, max_iter: int | None = None
    ) -> SolverResult: ...


@runtime_checkable
class MaskedSolver(FixedPointSolver, Protocol):
    """Optional: a solver that leaves masked samples alone, ``solve(f, z0, frozen=mask)``.

    A solver opts in with the class attribute ``accepts_frozen = True``; its
    ``solve`` then takes a keyword ``frozen``, a ``(B,)`` bool mask (or None)
    of samples already done: they keep ``z0``, take no steps and are reported
    converged.  Test with :func:`accepts_mask`.
    """

    accepts_frozen: bool

    def solve(
        self, f: Callable[[Tensor], Tensor], z0: Tensor, *, frozen: Tensor | None = None
    ) -> SolverResult: ...


def accepts_budget(solver: Any) -> bool:
    """Whether ``solver`` opted into :class:`BudgetedSolver` (``accepts_max_iter = True``)."""
    return isinstance(solver, BudgetedSolver) and solver.accepts_max_iter is True


def accepts_mask(solver: Any) -> bool:
    """Whether ``solver`` opted into :class:`MaskedSolver` (``accepts_frozen = True``)."""
    return isinstance(solver, MaskedSolver) and solver.accepts_frozen is True


def solve_with(
    solver: FixedPointSolver,
    f: Callable[[Tensor], Tensor],
    z0: Tensor,
    *,
    max_iter: int | None = None,
    frozen: Tensor | None = None,
) -> SolverResult:
    """``solver.solve(f, z0)`` with ``max_iter`` and ``frozen`` passed where the solver opts in.

    A solver that does not accept a budget runs with its own ``max_iter``; one
    that does not accept a mask steps every sample (callers keep only the
    results of the samples that were not frozen).
    """
    extras: dict[str, Any] = {}
    if max_iter is not None and accepts_budget(solver):
        extras["max_iter"] = max_iter
    if frozen is not None and accepts_mask(solver):
        extras["frozen"] = frozen
    return solver.solve(f, z0, **extras)


@runtime_checkable
class ShapedModel(Protocol):
    """Optional: a model that declares the shape of one input, e.g. ``(1, 28, 28)``.

    Inputs are checked against it before any sampling (see
    :func:`deqcert.certify.inputs.check_input`).  Any model may also set
    ``input_range``: ``(lo, hi)`` (default ``(0, 1)``, pixels) or ``None`` for
    inputs that are not images (no range check).
    """

    input_shape: tuple[int, ...]


@runtime_checkable
class EquilibriumModel(Protocol):
    """A DEQ: ``logits = readout(z*)`` with ``z* = f(z*, inject(x))``.

    Implementations are ``torch.nn.Module`` subclasses (for ``eval()``,
    ``.to()`` and state dicts).  Inputs are pixels in ``[0, 1]``: the
    certifiers add noise in pixel space, so any normalisation happens inside
    :meth:`inject`.  Every method works on a batch and its rows must not
    interact (no batch statistics; the certifiers run the model in ``eval()``
    mode): a sample's fixed point may depend on that sample only.  States and
    injections are single tensors with the batch first; a model whose state is
    a list of tensors (e.g. MDEQ) is packed by :func:`deqcert.adapt`.
    :func:`deqcert.models.check.check_model` checks these members before any work.
    A model may also define ``before_certificate()`` (run before each
    certificate, e.g. to reset TorchDEQ's weight norm), ``input_shape``
    (``(C, H, W)``, checked against the dataset) and ``input_range``
    (``(lo, hi)`` or ``None``; default ``(0, 1)``).
    """

    num_classes: int
    """Number of classes: the width of :meth:`readout`'s logits (an ``int >= 2``)."""

    def inject(self, x: Tensor) -> Tensor:
        """The injection ``u``, shape ``(B, ...)``, of pixels ``x`` ``(B, C, H, W)`` in ``[0, 1]``.

        Float tensors on the model's device and dtype; normalisation belongs here.
        """
        ...

    def init_state(self, u: Tensor) -> Tensor:
        """The reference solve's start ``z0`` ``(B, ...)`` for injections ``u`` (usually zeros).

        It must depend on ``u`` only, never on other inputs: ``h_ref`` starts here.
        """
        ...

    def f(self, z: Tensor, u: Tensor) -> Tensor:
        """The equilibrium map: the next state ``(B, ...)``, same shape and dtype as ``z``.

        Row ``i`` of the result depends on rows ``i`` of ``z`` and ``u`` only.
        """
        ...

    def readout(self, z: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` (float) of states ``z`` ``(B, ...)``."""
        ...

    def forward(
        self, x: Tensor, solver: FixedPointSolver | None = None, z0: Tensor | None = None
    ) -> Tensor:
        """Logits ``(B, num_classes)`` of pixels ``x``: ``readout`` of the fixed point ``solver``
        finds from ``z0`` (default ``init_state(inject(x))``; default solver: the model's own)."""
        ...


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
        unconverged_fraction: share of the solves defining the certified
            classifier whose final residual stayed above the solver's tolerance
            (vanilla: every solve; serialized: the reference solves of ``h_ref``,
            not the chains, which stop after a step or two by design; verified:
            samples left undecided).  Older results recorded the chains' share
            for serialized runs.
        extra: certifier-specific details.
        radius_cap: the largest radius this certifier's bound can give with
            these ``n``, ``alpha`` (and ``K``): its value on perfect counts
            (None when the certifier does not say).
        at_cap: True when ``radius`` is that cap, i.e. the counts were perfect
            and only more samples (``n``, ``K``) or a larger ``alpha`` could
            certify more.
        health: solver-health figures, e.g. ``reference_unconverged`` (share of
            ``h_ref`` solves that hit ``max_iter``: for those ``h_ref`` is the
            truncated solve) and ``chain_residual_median`` / ``chain_residual_max``.
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
    radius_cap: float | None = None
    at_cap: bool | None = None
    health: dict[str, float | None] = field(default_factory=dict)


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


@runtime_checkable
class ModelCheckingCertifier(Certifier, Protocol):
    """Optional: a certifier that can tell up front whether it can certify a model.

    :meth:`check_model` raises a :class:`~deqcert.errors.DeqcertError` (one
    line) if ``model`` cannot be certified; pipelines call it before writing
    any output.  The ``verified`` certifier uses it to refuse a model with no
    contraction bound.
    """

    def check_model(self, model: Any) -> None: ...
