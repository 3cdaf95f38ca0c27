"""Merging shards into one results file."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ResultsError
from .formats import TSV_COLUMNS, encode_record, infer_format, sidecar_path
from .headers import _first, format_ranges, header_differences
from .reading import ResultsFile, read_results
from .writer import check_writable, write_atomic


@dataclass
class MergeSummary:
    """What :func:`merge_results` wrote."""

    out: Path
    parts: int
    records: int


def expected_indices(header: Mapping[str, Any]) -> list[int]:
    """The indices a run with ``header`` selects (before sharding)."""
    from ..data.selection import select_indices

    config = header.get("config") or {}
    length = (header.get("dataset") or {}).get("length")
    if not isinstance(length, int):
        raise ResultsError("results header lacks the dataset length; cannot check for gaps")
    return select_indices(
        config.get("indices"), int(config.get("skip", 1)), config.get("max"), length
    )


def merge_results(out: str | Path, parts: Sequence[str | Path]) -> MergeSummary:
    """Join shard files into ``out`` (written atomically), sorted by index.

    Raises :class:`ResultsError` when headers disagree (shard fields aside) or
    when an index is missing, duplicated or outside the run's selection.
    """
    out = Path(out)
    if not parts:
        raise ResultsError("merge needs at least one results file")
    _check_paths(out, [Path(p) for p in parts])
    files = [read_results(p) for p in parts]
    for item in files:
        if item.header is None:
            raise ResultsError(f"{item.path} has no deqcert header; cannot merge it")
    _check_formats(files)
    base = files[0]
    assert base.header is not None
    for item in files[1:]:
        assert item.header is not None
        diffs = header_differences(base.header, item.header)
        if diffs:
            raise ResultsError(
                f"{item.path} and {base.path} come from different runs: {_first(diffs)}"
            )
    counts = Counter(i for item in files for i in item.indices)
    expected = set(expected_indices(base.header))
    problems = []
    duplicates = [i for i, c in counts.items() if c > 1]
    if duplicates:
        problems.append(f"duplicated indices: {format_ranges(duplicates)}")
    missing = expected - set(counts)
    if missing:
        torn = [str(item.path) for item in files if item.torn]
        hint = f" ({', '.join(torn)} end with an incomplete line; resume them)" if torn else ""
        problems.append(f"missing indices: {format_ranges(missing)}{hint}")
    unexpected = set(counts) - expected
    if unexpected:
        problems.append(f"indices outside the run's selection: {format_ranges(unexpected)}")
    if problems:
        raise ResultsError(f"cannot merge into {out}: " + "; ".join(problems))
    check_writable(out)
    records = sorted((r for item in files for r in item.records), key=lambda r: int(r["index"]))
    header = json.loads(json.dumps(base.header))
    header["shard"] = None
    header["merged_from"] = [str(item.path) for item in files]
    header.setdefault("config", {}).update(shard=None, out=str(out))
    fmt = infer_format(out)
    mode = str(header["config"].get("mode", "certify"))
    if fmt == "tsv":
        write_atomic(sidecar_path(out), json.dumps(header, indent=1) + "\n")
        body = "\t".join(TSV_COLUMNS[mode]) + "\n"
    else:
        body = json.dumps(header) + "\n"
    body += "".join(encode_record(_plain(r), fmt, mode) for r in records)
    write_atomic(out, body)
    return MergeSummary(out, len(files), len(records))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _check_paths(out: Path, parts: Sequence[Path]) -> None:
    """OUT must not be a part (merging would overwrite a shard), nor a part given twice."""
    for part in parts:
        if _same_file(out, part) or _same_file(sidecar_path(out), part):
            raise ResultsError(
                f"cannot merge into {out}: it is one of the parts ({part}); write the merged "
                "file elsewhere"
            )
    for i, part in enumerate(parts):
        for other in parts[:i]:
            if _same_file(part, other):
                raise ResultsError(f"cannot merge: {part} is given twice (as {other})")


def _check_formats(files: Sequence[ResultsFile]) -> None:
    """All parts in one format: TSV rows keep fewer fields, so mixing would drop some.

    OUT may have another format: a ``.tsv`` OUT is an explicit export to
    Cohen's columns (and a ``.jsonl`` OUT of TSV parts loses nothing).
    """
    formats = sorted({item.format for item in files})
    if len(formats) > 1:
        shown = "; ".join(
            f"{fmt}: {', '.join(str(i.path) for i in files if i.format == fmt)}" for fmt in formats
        )
        raise ResultsError(
            f"cannot merge parts of different formats ({shown}): TSV rows keep fewer fields "
            "than JSON Lines records, so fields would be lost; merge parts of one format"
        )


def _plain(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "type"}
