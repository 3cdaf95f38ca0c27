"""Is a results file whole?  Headers, records and index sets checked before a file is trusted.

Reading checks each line as it is parsed (:func:`check_header`,
:func:`check_record`); resuming also checks the file's index set against
the run's selection (:func:`check_indices`): every record belongs to the
selection and appears once.  Anything else is "file is damaged", with a
hint, never a traceback and never a file appended to.
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import DeqcertError, ResultsError
from ..options import short_repr
from .headers import format_ranges

HINT = "move it aside (or choose another --out) and run again"
_MAPPINGS = ("config", "checkpoint", "dataset", "model", "shard")


def damaged(path: str | Path, detail: str) -> ResultsError:
    """The error for a damaged file: what is wrong, and what to do."""
    return ResultsError(f"{path}: file is damaged: {detail}; {HINT}")


def check_header(path: str | Path, header: Any, where: str = "header") -> dict[str, Any]:
    """``header`` if it is a JSON object whose sections are objects (or null), else damaged."""
    if not isinstance(header, dict):
        raise damaged(path, f"{where} is {type(header).__name__}, not a JSON object")
    for key in _MAPPINGS:
        value = header.get(key)
        if value is not None and not isinstance(value, dict):
            raise damaged(path, f"{where} field '{key}' is {short_repr(value, 30)}, not a mapping")
    return header


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_record(path: str | Path, number: int, record: Mapping[str, Any]) -> None:
    """Damaged unless the record has a non-negative integer index and an integer prediction."""
    index: Any = record.get("index")
    if not _is_int(index) or index < 0:
        raise damaged(path, f"line {number}: index {short_repr(index, 30)} is no input index")
    prediction = record.get("prediction")
    if not _is_int(prediction):
        raise damaged(
            path, f"line {number}: prediction {short_repr(prediction, 30)} is not an integer"
        )


def check_indices(path: str | Path, indices: Iterable[int], expected: Iterable[int]) -> None:
    """Damaged unless every index is one of ``expected`` and appears once."""
    counts = Counter(indices)
    twice = [i for i, count in counts.items() if count > 1]
    if twice:
        raise damaged(path, f"indices recorded more than once: {format_ranges(twice)}")
    outside = set(counts) - set(expected)
    if outside:
        raise damaged(path, f"indices outside this run's selection: {format_ranges(outside)}")


def regular_or_absent(path: Path, what: str, error: type[DeqcertError] = ResultsError) -> None:
    """Refuse ``path`` unless it is missing or a regular file (no FIFO, device or socket).

    Reading a FIFO blocks, ``/dev/zero`` never ends, ``/dev/full`` and a pipe
    behind ``/dev/stdout`` cannot be resumed: results and configs are files.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise error(f"cannot use {path} as {what}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise error(
            f"cannot use {path} as {what}: it is {_kind(mode)}, not a regular file"
        )


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a plain file"
