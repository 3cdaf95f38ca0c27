"""Old home of the certifiers' shared machinery; re-exports :mod:`.base` and :mod:`.sampling`.

Kept for one release: import from :mod:`deqcert.certify.base` (options, input
check, decisions, building certificates) and :mod:`deqcert.certify.sampling`
(batched noisy solves) instead.
"""

from __future__ import annotations

from ..specs import NoiseOption, SolverOption
from .base import (
    SmoothingOptions,
    as_noise,
    as_solver,
    check_input,
    decide,
    describe,
    solver_field,
)
from .sampling import (
    SolveLog,
    batch_sizes,
    class_counts,
    evaluating,
    noisy_batch,
    solve_batch,
    solve_injected,
)

__all__ = [
    "NoiseOption",
    "SmoothingOptions",
    "SolveLog",
    "SolverOption",
    "as_noise",
    "as_solver",
    "batch_sizes",
    "check_input",
    "class_counts",
    "decide",
    "describe",
    "evaluating",
    "noisy_batch",
    "solve_batch",
    "solve_injected",
    "solver_field",
]
