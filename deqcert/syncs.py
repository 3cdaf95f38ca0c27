"""Where deqcert's sample loop waits for the device: a hook that tests (and profilers) listen to.

Code on the sample path calls :func:`note` at each place it deliberately
waits for a device value (see :mod:`deqcert.solvers._progress`, "lagged
wait", and the fallbacks for solvers that do not report their progress).
:func:`recording` collects the notes of a block.  The lagged waits happen on
CUDA only (on the CPU the solver's progress is known at once); the fallback
notes are made on every device, so the CPU tests see them.  Blocking reads of
device values through torch (``.item()``, ``nonzero``, ...) are not noted here:
the sample loop makes none (``tests/test_syncfree.py`` checks this on the CPU,
``tests/test_cuda.py`` on a GPU).
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
