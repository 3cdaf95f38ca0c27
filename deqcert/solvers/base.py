"""Base classes of the built-in solvers: budgets, frozen masks, the update-rule loop.

Both classes opt into the optional protocols
:class:`~deqcert.protocols.BudgetedSolver` (``accepts_max_iter``) and
:class:`~deqcert.protocols.MaskedSolver` (``accepts_frozen``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from ..options import ComponentOptions, Configurable
from ..protocols import SolverResult
from ._workspace import Workspace
from .loop import Map, SolverOptions, UpdateRule, check_state, iterate


class SolverBase(Configurable):
    """Base of the built-in solvers.

    Besides the protocol's ``solve(f, z0)`` they accept two keyword extras,
    used by the chain solver: ``frozen``, a ``(B,)`` mask of samples already
    done (kept as they are, no steps, reported converged with an infinite
    residual), and ``max_iter``, a tighter step budget for this call.
    """

    Options: ClassVar[type[ComponentOptions]] = SolverOptions
    options: Any
    accepts_max_iter: ClassVar[bool] = True
    """Opts into :class:`~deqcert.protocols.BudgetedSolver`: ``solve(..., max_iter=...)``."""
    accepts_frozen: ClassVar[bool] = True
    """Opts into :class:`~deqcert.protocols.MaskedSolver`: ``solve(..., frozen=...)``."""

    def solve(
        self,
        f: Map,
        z0: Tensor,
        *,
        frozen: Tensor | None = None,
        max_iter: int | None = None,
    ) -> SolverResult:
        """Solve ``z = f(z)`` for the batch ``z0`` (semantics: :mod:`deqcert.solvers.loop`)."""
        check_state(z0)
        return self._solve(f, z0, frozen, self.budget(max_iter))

    def _solve(self, f: Map, z0: Tensor, frozen: Tensor | None, budget: int) -> SolverResult:
        """Solve a checked ``z0`` in at most ``budget`` steps (``frozen``: see :meth:`solve`)."""
        raise NotImplementedError

    def budget(self, max_iter: int | None) -> int:
        """The step budget of one call: the option, capped by ``max_iter`` if given."""
        limit: int = self.options.max_iter
        return limit if max_iter is None else min(limit, max_iter)


class IterativeSolver(SolverBase):
    """A solver defined by its update rule, run by :func:`iterate`."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.workspace = Workspace()

    def make_update(self, z0: Tensor, max_iter: int) -> UpdateRule:
        """A fresh update rule for a solve from flat ``(B, D)`` ``z0`` of ``max_iter`` steps.

        Rules take their history buffers from ``self.workspace``.
        """
        raise NotImplementedError

    def _solve(self, f: Map, z0: Tensor, frozen: Tensor | None, budget: int) -> SolverResult:
        update = self.make_update(z0.reshape(z0.shape[0], -1), budget)
        return iterate(
            f, z0, self.options, update, frozen=frozen, max_iter=budget, workspace=self.workspace
        )
