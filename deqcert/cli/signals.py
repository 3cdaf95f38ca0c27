"""SIGINT and SIGTERM on the command line: one line, the command's hint, exit 130 or 143.

``certify`` and ``predict`` end the line with "run the same command again to
resume" (:func:`set_hint`); ``merge`` says that nothing was written.

While a command runs (and while the CLI's own modules import), both signals
end it with one line on stderr.  Inside a cleanup section (see
:mod:`deqcert._interrupts`: a results file open for writing, an atomic write,
a Ray cluster started here) they raise :class:`Interrupted` in the main
thread instead.  It derives from ``BaseException``, so ``finally`` blocks run
on the way out: the results file is closed with every finished record synced
(at worst a torn last line, which resuming drops), and atomic writes remove
their temporary files.  Anywhere else there is nothing to clean up and the
process exits at once, which also means an import cut short (torch, numpy)
is never retried half-loaded.  A second signal during cleanup exits at once.
Only the standard library is imported here, so the handlers are in place
before anything heavy loads.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

from .. import _interrupts

SIGNALS = (signal.SIGINT, signal.SIGTERM)
RESUME_HINT = "run the same command again to resume"
_hint: list[str] = []  # what the running command tells an interrupted user, if anything


def set_hint(text: str) -> None:
    """The hint the interrupt line ends with (``certify`` sets :data:`RESUME_HINT`)."""
    _hint[:] = [text]


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; :attr:`exit_code` is ``128 + signal number``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        name = signal.Signals(signum).name
        self.message = f"interrupted ({name}); {_hint[0]}" if _hint else f"interrupted ({name})"
        """The line to print, with the hint of the command running when the signal came."""

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _write(line: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"deqcert: error: {line}\n")
        sys.stderr.flush()


def _raise(signum: int, frame: FrameType | None) -> None:
    if not _interrupts.active():
        _exit_now(signum, frame)
    for sig in SIGNALS:  # a second signal while cleaning up ends the process now
        signal.signal(sig, _exit_now)
    raise Interrupted(signum)


def _exit_now(signum: int, frame: FrameType | None) -> None:
    _write(Interrupted(signum).message)
    os._exit(128 + signum)


@contextlib.contextmanager
def raising() -> Iterator[None]:
    """SIGINT/SIGTERM raise :class:`Interrupted` inside; the previous handlers come back after.

    Outside the main thread (where handlers cannot be set) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    hint = list(_hint)
    for sig in SIGNALS:
        signal.signal(sig, _raise)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _hint[:] = hint


@contextlib.contextmanager
def starting() -> Iterator[None]:
    """Around the CLI's imports and start: a signal prints one line and exits (no traceback)."""
    try:
        with raising():
            yield
    except (Interrupted, KeyboardInterrupt) as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else int(signal.SIGINT)
        _write(Interrupted(signum).message)
        raise SystemExit(128 + signum) from None
