"""Which inputs of a dataset a run covers: index lists, ranges, skip and limit."""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..errors import DataError, OptionError

_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def parse_indices(text: str) -> list[int]:
    """Parse ``"0-9,20,30-32"`` (inclusive ranges) into a list of indices."""
    out: list[int] = []
    for part in text.split(","):
        match = _RANGE.match(part)
        if match is None:
            raise OptionError(
                f"invalid indices {text!r}: expected comma-separated numbers or ranges, e.g. 0-9,20"
            )
        start = int(match[1])
        stop = int(match[2]) if match[2] is not None else start
        if stop < start:
            raise OptionError(f"invalid indices {text!r}: range {part.strip()} runs backwards")
        out.extend(range(start, stop + 1))
    return out


def select_indices(
    indices: str | Sequence[int] | None, skip: int, limit: int | None, length: int
) -> list[int]:
    """The indices a run covers: ``indices`` (default all), every ``skip``-th, at most ``limit``."""
    candidates = (
        list(range(length))
        if indices is None
        else (parse_indices(indices) if isinstance(indices, str) else [int(i) for i in indices])
    )
    seen: set[int] = set()
    for index in candidates:
        if not 0 <= index < length:
            raise DataError(
                f"index {index} is out of range: the dataset has {length} inputs "
                f"(valid indices 0-{length - 1})"
            )
        if index in seen:
            raise DataError(f"index {index} is selected twice; list each index once")
        seen.add(index)
    selected = candidates[::skip][:limit] if limit is not None else candidates[::skip]
    if not selected:
        raise DataError("empty selection: the indices, skip and max select no input")
    return selected
