"""Scratch tensors a solver reuses from one solve to the next.

Serialized smoothing calls a solver thousands of times on same-shaped batches
with 1-3 steps each.  Allocating the history buffers afresh every call costs
more than the steps themselves on CPU (every large allocation is new memory
that page-faults on first touch), so each solver keeps its scratch tensors
here and reuses them while the shape, dtype and device allow.

Rules that keep this safe:

* Only scratch space lives here; nothing returned to the caller aliases it.
* The cache is per thread (``threading.local``), so one solver object may be
  used from several threads; it is not reentrant (a solver must not be called
  from inside its own ``f``).
* With autograd recording, tensors are always fresh: reused buffers would be
  overwritten while a graph still refers to them.  Reuse is also keyed on
  inference mode, since inference tensors cannot be updated outside it.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
from torch import Tensor


class Workspace:
    """Named, reusable scratch tensors (per thread)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def get(
        self, name: str, shape: tuple[int, ...], like: Tensor, dtype: torch.dtype | None = None
    ) -> Tensor:
        """An uninitialised tensor of ``shape`` on ``like``'s device (``dtype`` or ``like``'s)."""
        dtype = like.dtype if dtype is None else dtype
        if torch.is_grad_enabled():
            return torch.empty(shape, dtype=dtype, device=like.device)
        cache: dict[str, Tensor] = self._local.__dict__.setdefault("cache", {})
        numel = 1
        for size in shape:
            numel *= size
        flat = cache.get(name)
        if (
            flat is None
            or flat.numel() < numel
            or flat.dtype != dtype
            or flat.device != like.device
            or flat.is_inference() != torch.is_inference_mode_enabled()
        ):
            flat = torch.empty(numel, dtype=dtype, device=like.device)
            cache[name] = flat
        return flat[:numel].view(shape)

    def clear(self) -> None:
        """Release this thread's cached tensors."""
        self._local.__dict__.pop("cache", None)

    # solvers are pickled (multiprocessing, Ray): the cache is not part of their state
    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._local = threading.local()
