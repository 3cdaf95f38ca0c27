"""Which inputs of a dataset a run covers: index lists, ranges, skip and limit."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NoReturn

from ..errors import DataError, OptionError
from ..options import short_repr

_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def parse_ranges(text: str) -> list[range]:
    """Parse ``"0-9,20,30-32"`` (inclusive ranges) into ranges, without expanding them."""
    out: list[range] = []
    shown = short_repr(text, 40)
    for part in text.split(","):
        match = _RANGE.match(part)
        if match is None:
            raise OptionError(
                f"invalid indices {shown}: expected comma-separated numbers or ranges, e.g. 0-9,20"
            )
        start = int(match[1])
        stop = int(match[2]) if match[2] is not None else start
        if stop < start:
            raise OptionError(f"invalid indices {shown}: range {part.strip()} runs backwards")
        out.append(range(start, stop + 1))
    return out


def parse_indices(text: str) -> list[int]:
    """Parse ``"0-9,20,30-32"`` (inclusive ranges) into a list of indices."""
    return [index for span in parse_ranges(text) for index in span]


def _checked_ranges(text: str, length: int) -> list[int]:
    """The indices of ``text``, refused before expanding when out of range or repeated.

    Each range is checked against ``length`` first, and ranges adding up to more
    than ``length`` indices must repeat one, so the list built is never longer
    than the dataset.
    """
    spans = parse_ranges(text)
    for span in spans:
        if span.stop > length:
            _out_of_range(span.stop - 1 if span.start < length else span.start, length)
    if sum(len(span) for span in spans) > length:
        raise DataError(
            f"indices {short_repr(text, 40)} select more inputs than the dataset's {length}: "
            "some index is selected twice; list each index once"
        )
    return [index for span in spans for index in span]


def _out_of_range(index: int, length: int) -> NoReturn:
    raise DataError(
        f"index {index} is out of range: the dataset has {length} inputs "
        f"(valid indices 0-{length - 1})"
    )


def select_indices(
    indices: str | Sequence[int] | None, skip: int, limit: int | None, length: int
) -> list[int]:
    """The indices a run covers: ``indices`` (default all), every ``skip``-th, at most ``limit``."""
    candidates = (
        list(range(length))
        if indices is None
        else (_checked_ranges(indices, length) if isinstance(indices, str)
              else [int(i) for i in indices])
    )
    seen: set[int] = set()
    for index in candidates:
        if not 0 <= index < length:
            _out_of_range(index, length)
        if index in seen:
            raise DataError(f"index {index} is selected twice; list each index once")
        seen.add(index)
    selected = candidates[::skip][:limit] if limit is not None else candidates[::skip]
    if not selected:
        raise DataError("empty selection: the indices, skip and max select no input")
    return selected
