"""Where deqcert's sample loop waits for the device: a hook that tests (and profilers) listen to.

Code on the sample path calls :func:`note` at each place it deliberately
waits for a device value (see :mod:`deqcert.solvers._progress`, "lagged
wait", and the fallbacks for solvers that do not report their progress).
:func:`recording` collects the notes of a block.  On the CPU nothing blocks,
but the notes are made all the same, so the CPU tests see the places a CUDA
run would wait at.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

_listeners: list[Callable[[str], None]] = []


def note(where: str) -> None:
    """Report one wait for the device at ``where``."""
    for listener in _listeners:
        listener(where)


@contextmanager
def recording() -> Iterator[list[str]]:
    """The notes made inside the block, in order."""
    found: list[str] = []
    _listeners.append(found.append)
    try:
        yield found
    finally:
        _listeners.remove(found.append)
