"""Sections of work that must clean up when the CLI is interrupted (standard library only).

The CLI's SIGINT/SIGTERM handler (:mod:`deqcert.cli.signals`) exits at once
unless one of these sections is active: then it raises, so ``finally`` blocks
close the results file and remove temporary files.  Exiting at once
elsewhere never leaves a half-imported extension module behind a later
import, and there is nothing to clean up yet.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

_active = 0


def enter() -> None:
    """Start a section (pair with :func:`leave`)."""
    global _active
    _active += 1


def leave() -> None:
    """End a section started by :func:`enter`."""
    global _active
    _active = max(_active - 1, 0)


def active() -> bool:
    """True while some section is active."""
    return _active > 0


@contextlib.contextmanager
def cleanup_section() -> Iterator[None]:
    """A section as a context manager."""
    enter()
    try:
        yield
    finally:
        leave()
