"""Atomic file replacement: write a temporary file beside the target, then rename it.

Readers never see a partly written checkpoint or results file, and a failed
write leaves the old file (or none) in place.  A temporary file's name holds
the writing process's id (``.<name>.<pid>.<random>.tmp``): one left by a
killed process is removed by the next write of the same target, and an
interrupted write (SIGINT/SIGTERM in the CLI) removes its own.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from . import _interrupts


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (best effort: not every file system allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[str]:
    """Yield a temporary path to write; on success it replaces ``path`` with the usual mode.

    ``mkstemp`` creates files readable by the owner only; the finished file gets
    ``0o666`` minus the umask, like any file the user creates.  On an exception the
    temporary file is removed and ``path`` is left as it was.
    """
    remove_stale(path)
    with _interrupts.cleanup_section():
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent
        )
        os.close(fd)
        try:
            yield tmp
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
            fsync_dir(path.parent)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: alive
        return True
    return True


def remove_stale(path: Path) -> list[Path]:
    """Remove temporary files for ``path`` left by processes that no longer run; return them."""
    removed = []
    prefix = f".{path.name}."
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            name = entry.name
            if not (name.startswith(prefix) and name.endswith(".tmp")):
                continue
            parts = name[len(prefix):].split(".")  # [pid, random, "tmp"]
            if len(parts) != 3 or not parts[0].isdigit():
                continue
            pid = int(parts[0])
            if pid != os.getpid() and not _running(pid):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed

