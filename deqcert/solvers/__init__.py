"""Batched fixed-point solvers: ``naive``, ``anderson``, ``broyden`` and ``chain``.

They are registered through deqcert's ``deqcert.solvers`` entry points and
built with :func:`deqcert.create_solver`.  All share one loop and one set of
semantics (per-sample stopping and freezing, NFE and step counting, residuals):
see :mod:`deqcert.solvers.loop`.  Plugin solvers can check themselves
against the same contract with :mod:`deqcert.testing.solvers`.
"""

from .base import IterativeSolver
from .loop import SolverOptions, UpdateRule
from .rowwise import RowwiseMap

__all__ = ["IterativeSolver", "RowwiseMap", "SolverOptions", "UpdateRule"]
