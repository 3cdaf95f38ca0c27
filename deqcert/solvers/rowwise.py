"""Maps whose batch rows do not interact, and counting the rows a solve evaluated.

A :class:`RowwiseMap` lets a solver built with ``compact=True`` evaluate ``f``
on the unfinished rows only (see :mod:`deqcert.solvers.loop`);
:func:`row_evaluations` counts the per-sample evaluations behind any
:class:`~deqcert.protocols.SolverResult`.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from ..protocols import SolverResult


class RowwiseMap:
    """The map ``z -> fn(z, *rows)`` of a batch whose rows do not interact.

    ``rows`` are per-sample tensors with the batch as first dimension (e.g. a
    DEQ's input injection ``u``).  Calling it is calling ``fn`` on the whole
    batch, so it can be passed to any solver; solvers built with
    ``compact=True`` also use :meth:`restrict` to evaluate it on the rows that
    are not finished.  Wrap only maps whose output row ``i`` depends on input
    row ``i`` alone (a model in eval mode: no batch statistics).
    """

    def __init__(self, fn: Callable[..., Tensor], *rows: Tensor) -> None:
        self.fn = fn
        self.rows = rows

    def __call__(self, z: Tensor) -> Tensor:
        return self.fn(z, *self.rows)

    def restrict(self, index: Tensor) -> RowwiseMap:
        """The same map for the batch rows ``index`` (a 1-D index tensor) only."""
        return RowwiseMap(self.fn, *(t.index_select(0, index) for t in self.rows))


def row_evaluations(result: SolverResult, batch: int) -> int:
    """Per-sample evaluations of ``f`` behind ``result`` (``nfe * batch`` unless it says less)."""
    evaluations = getattr(result, "evaluations", -1)
    return int(evaluations) if evaluations >= 0 else int(result.nfe) * batch
