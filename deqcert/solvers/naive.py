"""Plain (optionally damped) fixed-point iteration ``z <- (1 - d) z + d f(z)``."""

from __future__ import annotations

from pydantic import Field
from torch import Tensor

from .base import IterativeSolver
from .loop import SolverOptions, UpdateRule


class NaiveOptions(SolverOptions):
    """Options of :class:`NaiveSolver`."""

    damping: float = Field(
        1.0, gt=0, le=1, description="Step size d; 1 is the plain iteration z <- f(z)."
    )


class _NaiveUpdate(UpdateRule):
    compactable = True

    def __init__(self, damping: float) -> None:
        self.damping = damping

    def restrict(self, index: Tensor) -> None:
        """Stateless: nothing to drop."""

    def __call__(self, k: int, z: Tensor, fz: Tensor, g: Tensor) -> Tensor:
        if self.damping == 1.0:
            return fz
        return z + self.damping * g


class NaiveSolver(IterativeSolver):
    """Picard iteration with optional damping; the baseline every solver must beat."""

    Options = NaiveOptions

    def make_update(self, z0: Tensor, max_iter: int) -> UpdateRule:
        return _NaiveUpdate(self.options.damping)
