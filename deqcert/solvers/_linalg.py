"""Small batched linear-algebra helpers of the built-in solvers (private).

Everything works on flat ``(B, D)`` per-sample tensors.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._progress import reads_free


def flat_norm(x: Tensor) -> Tensor:
    """Per-sample Euclidean norm of a ``(B, D)`` tensor, shape ``(B,)``."""
    return torch.linalg.vector_norm(x, dim=1)


def solve_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype for the small linear-algebra problems (half precision is promoted)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def finite_rows(x: Tensor) -> Tensor:
    """``(B,)`` mask of the rows of a ``(B, D)`` tensor that are entirely finite.

    Checks the row sums (NaN and inf propagate into them), one pass instead of
    several; a finite row whose sum overflows is (harmlessly) reported too.
    """
    return torch.isfinite(x.sum(dim=1))


def keep_finite(x: Tensor, fallback: Callable[[], Tensor]) -> Tensor:
    """``x`` with its non-finite rows replaced by those of ``fallback()``.

    Where reading values is free (:func:`~deqcert.solvers._progress.reads_free`) an
    all-finite ``x`` is returned as it is; on CUDA the rows are masked, without a
    host read (in place: ``x`` must be the caller's own fresh tensor).
    """
    finite = finite_rows(x)
    if reads_free(x.device) and bool(finite.all()):
        return x
    out = None if x.requires_grad else x
    return torch.where(finite.unsqueeze(1), x, fallback(), out=out)


def batched_dots(mat: Tensor, vec: Tensor) -> Tensor:
    """``(B, n, D) . (B, D) -> (B, n)``: the dot product of ``vec`` with each row of ``mat``.

    Written as ``vec^T mat^T``: on CPU this is an order of magnitude faster
    than the equivalent ``mat @ vec`` batched matrix-vector product.
    """
    return torch.bmm(vec.unsqueeze(1), mat.transpose(1, 2)).squeeze(1)


def batched_combination(coef: Tensor, mat: Tensor) -> Tensor:
    """``(B, n) , (B, n, D) -> (B, D)``: ``sum_i coef_i mat_i`` per sample."""
    return torch.bmm(coef.to(mat.dtype).unsqueeze(1), mat).squeeze(1)
