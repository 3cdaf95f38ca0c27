"""How much memory a process may still use, and refusing work that will not fit.

Large allocations that a user's numbers decide (a checkpoint's tensors, the
noise of a batch, the reference subset) are checked against
:func:`available_bytes` before they are made, so a mistaken number gives one
clear line instead of a ``MemoryError`` (or the kernel's OOM killer) later.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

from .errors import OptionError


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_available() -> int | None:
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        return max(int(limit) - used, 0)
    except (OSError, ValueError):
        return None


def _address_space_available() -> int | None:
    """What ``ulimit -v`` (RLIMIT_AS) still allows this process to map."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(soft - pages * os.sysconf("SC_PAGE_SIZE"), 0)


def available_bytes() -> int | None:
    """The least of free RAM, the cgroup's allowance and the address-space limit (None: unknown)."""
    known = [v for v in (_meminfo_available(), _cgroup_available(), _address_space_available())
             if v is not None]
    return min(known) if known else None


def format_bytes(count: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def check_fits(needed: int, what: str, hint: str = "") -> None:
    """Raise :class:`OptionError` if ``needed`` bytes for ``what`` exceed what is available."""
    free = available_bytes()
    if free is not None and needed > free:
        extra = f"; {hint}" if hint else ""
        raise OptionError(
            f"{what} needs about {format_bytes(needed)} of memory but only "
            f"{format_bytes(free)} is available{extra}"
        )
