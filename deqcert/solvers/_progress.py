"""How many rows of a solve are finished, as the host may know it without draining the GPU.

The loop's control flow (stop when every row is finished, compact the working
set once a share of it is) needs a count on the host, and reading a CUDA
tensor's value blocks until the GPU has caught up: the queue drains and the
GPU idles while the host launches the next kernels.  :class:`Progress`
instead copies each step's count into pinned host memory (``non_blocking``)
behind a CUDA event and reads it once the event has completed.  The host's
view therefore lags the device by at most :data:`LAG` + 1 steps: when more
counts are in flight the host waits on the oldest one's event, recorded at
least two steps earlier, so the GPU still has the later steps queued (a
*lagged wait*, reported through :mod:`deqcert.syncs`; no ``.item()`` or
``nonzero`` of a fresh value).

The counts only grow within a working set, so the view is a lower bound:
decisions taken on it are the same as on the true count, at most a few steps
late.  On the CPU the copy has already happened when ``push`` returns, the
view is exact and the loop takes exactly the decisions it took when it read
its values directly.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import syncs

LAG = 1
"""Counts allowed in flight before the host waits for the oldest (see the module docstring)."""


SHORTCUTS = True
"""Whether the solvers may read values directly where that is free (every device but CUDA).

They then index the rows to freeze and skip the non-finite fallback when every row is
finite, as fast as before on the CPU; on CUDA they mask instead.  Tests set it to False
to run the CUDA path on the CPU.
"""


def reads_free(device: torch.device) -> bool:
    """Whether a solver may read values of tensors on ``device`` (see :data:`SHORTCUTS`)."""
    return SHORTCUTS and device.type != "cuda"


class Progress:
    """Lagged host view of a device count (``push`` per step, ``known`` when needed)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._pending: deque[tuple[Any, int]] = deque()
        self._known = 0
        self.reset()

    def push(self, count: Tensor) -> None:
        """Send the 0-d ``count`` of this step towards the host (no wait)."""
        slot = self._pushed % self._values.shape[0]
        self._pushed += 1
        self._host[slot].copy_(count, non_blocking=True)
        if not self.cuda:  # already copied
            self._known = max(self._known, int(self._values[slot]))
            return
        self._pending.append((self._record(), slot))

    def add(self, finished: int) -> None:
        """Count ``finished`` more rows, read where that is free (never on CUDA)."""
        self._known += finished

    def known(self) -> int:
        """The newest count that has reached the host (a lower bound of the current one)."""
        while self._pending:
            event, slot = self._pending[0]
            if not event.query():
                if len(self._pending) <= LAG:
                    break
                syncs.note("lagged wait: solver progress")
                event.synchronize()
            self._pending.popleft()
            self._known = max(self._known, int(self._values[slot]))
        return self._known

    def reset(self) -> None:
        """Forget every count: the working set changed (what is in flight counts old rows).

        Counts still in flight land in the old buffer, never in the fresh one.
        """
        self._host, self._values = self._buffer(LAG + 2)  # a slot is free when reused
        self._pushed = 0
        self._pending.clear()
        self._known = 0

    def _buffer(self, slots: int) -> tuple[Tensor, np.ndarray]:
        """Host memory for the counts: a tensor to copy into and a numpy view to read."""
        if self.cuda:  # pinned: the device-to-host copy does not block
            host = torch.zeros(slots, dtype=torch.long, pin_memory=True)
            return host, host.numpy()
        values = np.zeros(slots, dtype=np.int64)
        return torch.from_numpy(values), values

    def _record(self) -> Any:
        """A CUDA event on the current stream, after the copy just queued."""
        event = torch.cuda.Event()
        event.record()
        return event
