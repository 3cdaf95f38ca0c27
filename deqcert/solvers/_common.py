"""Old home of the solvers' shared machinery; re-exports the modules that replaced it.

Kept for one release.  Use :mod:`deqcert.solvers.loop` (the iteration loop and
stop rules), :mod:`deqcert.solvers.rowwise` (:class:`RowwiseMap`,
:func:`row_evaluations`) and :mod:`deqcert.solvers.base` (:class:`SolverBase`,
:class:`IterativeSolver`).
"""

from __future__ import annotations

from ._linalg import batched_combination, batched_dots, finite_rows, flat_norm, solve_dtype
from .base import IterativeSolver, SolverBase
from .loop import (
    COMPACT_SHARE,
    REL_EPS,
    IterationResult,
    Map,
    SolverOptions,
    StopMode,
    UpdateRule,
    check_state,
    iterate,
    residual,
)
from .rowwise import RowwiseMap, row_evaluations

__all__ = [
    "COMPACT_SHARE",
    "REL_EPS",
    "IterationResult",
    "IterativeSolver",
    "Map",
    "RowwiseMap",
    "SolverBase",
    "SolverOptions",
    "StopMode",
    "UpdateRule",
    "batched_combination",
    "batched_dots",
    "check_state",
    "finite_rows",
    "flat_norm",
    "iterate",
    "residual",
    "row_evaluations",
    "solve_dtype",
]
