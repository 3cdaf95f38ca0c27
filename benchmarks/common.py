"""Helpers shared by the certification benchmarks: threads, allocator, markdown tables."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from collections.abc import Sequence

import torch

MMAP_THRESHOLD = 32 * 1024 * 1024
"""glibc's largest accepted ``M_MMAP_THRESHOLD`` on 64-bit (``HEAP_MAX_SIZE / 2``)."""
TRIM_THRESHOLD = 1 << 40
"""Never give the top of the heap back to the kernel during a run."""
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_allocator() -> bool:
    """Keep freed batch-sized tensors in the heap instead of unmapping them (glibc only).

    The same as launching with ``MALLOC_MMAP_THRESHOLD_=33554432`` and
    ``MALLOC_TRIM_THRESHOLD_=1099511627776``: tensors of a few MB are then
    reused from the heap rather than mapped afresh (and page-faulted on first
    touch) on every allocation.  Returns whether both settings were accepted.
    """
    name = ctypes.util.find_library("c")
    if platform.system() != "Linux" or name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mmap_ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    trim_ok = mallopt(_M_TRIM_THRESHOLD, min(TRIM_THRESHOLD, 2**31 - 1)) == 1
    return mmap_ok and trim_ok


def machine(threads: int | None = None) -> str:
    """One line describing the software and hardware the numbers come from."""
    cpu = platform.processor() or platform.machine()
    threads = torch.get_num_threads() if threads is None else threads
    return (
        f"torch {torch.__version__}, {threads} torch thread(s), {os.cpu_count()} CPU(s) "
        f"{cpu}, Python {platform.python_version()}"
    )


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table (first column left-aligned, the others right)."""
    align = ["---"] + ["--:"] * (len(headers) - 1)
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def pct(value: float) -> str:
    """A share as a percentage with one decimal."""
    return f"{100 * value:.1f}"
