"""Krasnoselskii-Mann iteration: ``z <- (1 - alpha) z + alpha f(z)``.

For a nonexpansive ``f`` (Lipschitz constant at most 1) with a fixed point,
the averaged map ``(1 - alpha) I + alpha f`` converges to a fixed point for
any ``alpha`` in ``(0, 1)``, even where the plain iteration ``z <- f(z)``
oscillates.  With ``alpha = 1`` it is the plain iteration.

The solver only supplies the update rule; deqcert's shared loop
(``deqcert.solvers.loop.iterate``) does the residuals, per-sample stopping
and freezing, and the NFE and step counting, so ``km`` follows exactly the
same semantics as the built-in solvers.
"""

from __future__ import annotations

from pydantic import Field
from torch import Tensor

from deqcert.solvers import IterativeSolver, SolverOptions, UpdateRule


class KMOptions(SolverOptions):
    """Options of :class:`KMSolver` (plus ``max_iter``, ``tol``, ``stop_mode``)."""

    alpha: float = Field(
        0.5, gt=0, le=1, description="Averaging weight in (0, 1]; 1 is the plain iteration."
    )


class KMUpdate(UpdateRule):
    """One averaged step ``z + alpha (f(z) - z)`` on flat ``(B, D)`` tensors.

    It keeps no per-sample state, so the shared loop may drop finished rows
    from the batch (``compact``) at no cost: :meth:`restrict` has nothing to do.
    """

    compactable = True

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha

    def restrict(self, index: Tensor) -> None:
        """Stateless: nothing to drop."""

    def __call__(self, k: int, z: Tensor, fz: Tensor, g: Tensor) -> Tensor:
        return z + self.alpha * g


class KMSolver(IterativeSolver):
    """Batched Krasnoselskii-Mann solver, registered as ``km``.

    Example:
        ``deqcert.create_solver("km", alpha=0.5, max_iter=50, tol=1e-4)``
    """

    Options = KMOptions

    def make_update(self, z0: Tensor, max_iter: int) -> UpdateRule:
        return KMUpdate(self.options.alpha)
