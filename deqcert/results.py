"""Results files: what is written when, resuming, and merging shards.

JSON Lines (``.jsonl``, the default): the first line is a header record
(``"type": "header"``: the effective config, package version, checkpoint
SHA-256, seed, shard, dataset size), then one ``"type": "record"`` line per
input.  Each line is written whole, flushed and ``fsync``-ed before the next
input starts, so a crash loses at most the input in progress and leaves at
worst a torn (newline-less) last line.

TSV (``.tsv``) writes Cohen et al.'s columns ``idx label predict radius
correct time`` (``idx label predict correct time`` for predictions) so
existing analysis scripts read it; its header record lives next to it in
``<file>.header.json``.

Resuming (:class:`ResultsWriter` on an existing file) checks that the file's
header describes the same run (keys that do not change results, such as the
output path, format, shard and executor, are ignored), drops a torn last line
and skips the indices already recorded.  :func:`merge_results` joins shards
after checking their headers agree and that every selected index appears
exactly once.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ._atomic import fsync_dir, replacing
from .errors import ResultsError

try:  # POSIX only: advisory lock against two writers on one file
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

FORMAT_VERSION = 1
FORMATS = ("jsonl", "tsv")
NEUTRAL_KEYS = frozenset({"out", "format", "shard", "executor", "checkpoint"})
"""Config keys that do not change any record (the checkpoint is compared by its SHA-256)."""
TIMING_KEYS = frozenset({"seconds", "time"})
"""Record fields that measure wall time and so differ between identical runs."""
TSV_COLUMNS = {
    "certify": ("idx", "label", "predict", "radius", "correct", "time"),
    "predict": ("idx", "label", "predict", "correct", "time"),
}


# -- formats ------------------------------------------------------------------
def infer_format(path: str | Path, fmt: str | None = None) -> str:
    """``fmt`` if given, else ``tsv`` for a ``.tsv`` path and ``jsonl`` otherwise."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise ResultsError(f"unknown results format {fmt!r}; accepted: {', '.join(FORMATS)}")
        return fmt
    return "tsv" if Path(path).suffix.lower() == ".tsv" else "jsonl"


def sidecar_path(path: str | Path) -> Path:
    """Where a TSV file's header record is kept."""
    path = Path(path)
    return path.with_name(path.name + ".header.json")


def to_jsonable(value: Any) -> Any:
    """Tensors, numpy values, paths and dataclasses as plain JSON values."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [to_jsonable(v) for v in value]
    if isinstance(value, str | bool | int | float) or value is None:
        return value
    if hasattr(value, "to_dict"):
        return to_jsonable(value.to_dict())
    if hasattr(value, "tolist"):  # torch tensors, numpy arrays and scalars
        return to_jsonable(value.tolist())
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def _format_time(seconds: Any) -> str:
    return str(datetime.timedelta(seconds=float(seconds or 0.0)))


def _parse_time(text: str) -> float:
    try:
        hours, minutes, seconds = text.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return float(text)


def encode_record(record: Mapping[str, Any], fmt: str, mode: str = "certify") -> str:
    """One output line (with its newline) for ``record``."""
    if fmt == "jsonl":
        return json.dumps({"type": "record", **to_jsonable(record)}, sort_keys=False) + "\n"
    values = {
        "idx": record["index"],
        "label": record.get("label"),
        "predict": record.get("prediction"),
        "radius": f"{float(record.get('radius') or 0.0):.6g}",
        "correct": int(bool(record.get("correct"))),
        "time": _format_time(record.get("seconds")),
    }
    return "\t".join(str(values[c]) for c in TSV_COLUMNS[mode]) + "\n"


def _decode_tsv(line: str, columns: Sequence[str]) -> dict[str, Any]:
    cells = dict(zip(columns, line.split("\t"), strict=True))
    record: dict[str, Any] = {
        "index": int(cells["idx"]),
        "label": int(cells["label"]),
        "prediction": int(cells["predict"]),
        "correct": bool(int(cells["correct"])),
        "seconds": _parse_time(cells["time"]),
    }
    if "radius" in cells:
        record["radius"] = float(cells["radius"])
    return record


# -- reading ------------------------------------------------------------------
@dataclass
class ResultsFile:
    """A results file as read back: header, complete records, and whether its tail is torn."""

    path: Path
    format: str
    header: dict[str, Any] | None
    records: list[dict[str, Any]] = field(default_factory=list)
    valid_size: int = 0
    torn: bool = False

    @property
    def indices(self) -> list[int]:
        return [int(r["index"]) for r in self.records]


def read_results(path: str | Path, fmt: str | None = None) -> ResultsFile:
    """Read a results file; a torn (newline-less) last line is reported, not returned."""
    path = Path(path)
    fmt = infer_format(path, fmt)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ResultsError(f"results file not found: {path}") from None
    except (IsADirectoryError, PermissionError, OSError) as exc:
        raise ResultsError(f"cannot read results file {path}: {exc.strerror or exc}") from None
    complete, newline, tail = data.rpartition(b"\n")
    valid_size = len(data) - len(tail)
    lines = complete.decode("utf-8", errors="replace").split("\n") if newline else []
    result = ResultsFile(path, fmt, None, valid_size=valid_size, torn=bool(tail))
    if fmt == "jsonl":
        _parse_jsonl(result, lines)
    else:
        _parse_tsv(result, lines)
    return result


def _parse_jsonl(result: ResultsFile, lines: list[str]) -> None:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            raise ResultsError(
                f"{result.path}, line {number}: not valid JSON; the file is damaged"
            ) from None
        if not isinstance(item, dict):
            raise ResultsError(f"{result.path}, line {number}: expected a JSON object")
        if item.get("type") == "header":
            if result.header is not None or result.records:
                raise ResultsError(f"{result.path}, line {number}: a second header record")
            result.header = item
        elif "index" in item:
            if result.header is None:
                raise ResultsError(f"{result.path} does not start with a header record")
            result.records.append(item)
        else:
            raise ResultsError(f"{result.path}, line {number}: neither a header nor a record")


def _parse_tsv(result: ResultsFile, lines: list[str]) -> None:
    sidecar = sidecar_path(result.path)
    if sidecar.is_file():
        try:
            result.header = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ResultsError(f"{sidecar} is unreadable: {exc}") from None
    if not lines:
        return
    columns = tuple(lines[0].strip().split("\t"))
    if columns not in TSV_COLUMNS.values():
        raise ResultsError(
            f"{result.path}: unexpected TSV columns {' '.join(columns)}; expected "
            f"{' '.join(TSV_COLUMNS['certify'])}"
        )
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            result.records.append(_decode_tsv(line.rstrip("\r"), columns))
        except ValueError:
            raise ResultsError(f"{result.path}, line {number}: malformed TSV row") from None


# -- comparing headers ---------------------------------------------------------
def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def _comparable(header: Mapping[str, Any]) -> dict[str, Any]:
    config = {
        k: v
        for k, v in dict(header.get("config") or {}).items()
        if k not in NEUTRAL_KEYS and not (v is None and k.endswith("solver"))
    }  # a solver role the certifier does not take: absent today, null in older files
    if isinstance(config.get("device"), str):
        config["device"] = config["device"].split(":")[0]  # cuda:0 and cuda:1 agree
    checkpoint = header.get("checkpoint") or {}
    dataset = header.get("dataset") or {}
    return {
        **_flatten(config),
        "checkpoint.sha256": checkpoint.get("sha256"),
        "dataset.length": dataset.get("length"),
    }


def header_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key: old != new`` for every result-relevant setting the two headers disagree on."""
    a, b = _comparable(old), _comparable(new)
    missing = object()
    diffs = []
    for key in sorted(set(a) | set(b)):
        left, right = a.get(key, missing), b.get(key, missing)
        if left != right:
            show = [("(unset)" if v is missing else json.dumps(v)) for v in (left, right)]
            diffs.append(f"{key}: {show[0]} != {show[1]}")
    return diffs


def _first(diffs: Sequence[str], limit: int = 6) -> str:
    shown = "; ".join(diffs[:limit])
    return shown + (f"; and {len(diffs) - limit} more" if len(diffs) > limit else "")


def strip_timing(record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` without wall-time fields (at any depth), for comparing runs."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key in TIMING_KEYS:
            continue
        out[key] = strip_timing(value) if isinstance(value, Mapping) else value
    return out


def format_ranges(indices: Iterable[int], limit: int = 20) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2, 5, 7-8"`` (at most ``limit`` ranges shown)."""
    ranges: list[list[int]] = []
    for index in sorted(indices):
        if ranges and index == ranges[-1][1] + 1:
            ranges[-1][1] = index
        else:
            ranges.append([index, index])
    text = [f"{a}" if a == b else f"{a}-{b}" for a, b in ranges[:limit]]
    if len(ranges) > limit:
        text.append(f"... ({len(ranges) - limit} more ranges)")
    return ", ".join(text)


# -- writing ------------------------------------------------------------------
def check_writable(path: Path, *, create_parent: bool = False) -> None:
    """Raise :class:`ResultsError` unless ``path`` can be created or appended to.

    Nothing is left behind: a directory is probed by creating and removing a
    temporary file, an existing file by opening it for appending.
    """
    if path.is_dir():
        raise ResultsError(f"cannot write {path}: it is a directory")
    folder = path.parent
    if not folder.exists():
        ancestor = next((p for p in folder.parents if p.exists()), Path("."))
        if not create_parent or not ancestor.is_dir():
            raise ResultsError(f"cannot write {path}: directory {folder} does not exist")
        folder = ancestor
    if not folder.is_dir():
        raise ResultsError(f"cannot write {path}: {folder} is not a directory")
    try:
        if path.exists():
            with open(path, "ab"):
                pass
        else:
            fd, probe = tempfile.mkstemp(prefix=".deqcert-probe-", dir=folder)
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise ResultsError(
            f"cannot write {path}: {exc.strerror or exc} (directory {folder})"
        ) from None


class ResultsWriter:
    """Appends records to a results file, resuming an existing one.

    Construction only checks (nothing is created or changed): the path must be
    writable and an existing file's header must describe the same run.
    :attr:`done` then holds the indices already recorded.  :meth:`open` creates
    the file (header first) or drops a torn last line, and takes an advisory
    lock so two processes never append to one file.
    """

    def __init__(
        self,
        path: str | Path,
        header: Mapping[str, Any],
        fmt: str | None = None,
        *,
        create_parent: bool = False,
    ) -> None:
        self.path = Path(path)
        self.format = infer_format(self.path, fmt)
        self.header = to_jsonable({"type": "header", **header, "format_version": FORMAT_VERSION})
        self.mode = str(self.header.get("config", {}).get("mode", "certify"))
        self.create_parent = create_parent
        self.done: set[int] = set()
        self.existing: ResultsFile | None = None
        self._handle: IO[bytes] | None = None
        check_writable(self.path, create_parent=create_parent)
        if self.path.exists():
            self._check_existing()

    @property
    def resuming(self) -> bool:
        """True when records are appended to an existing run (not starting it over)."""
        existing = self.existing
        return existing is not None and existing.header is not None and existing.valid_size > 0

    def _check_existing(self) -> None:
        existing = read_results(self.path, self.format)
        if existing.header is None:
            if existing.records or (self.format == "tsv" and existing.valid_size):
                raise ResultsError(
                    f"{self.path} exists but has no deqcert header; refusing to append. "
                    "Use another --out"
                )
            self.existing = existing  # empty or torn header: start over
            return
        diffs = header_differences(existing.header, self.header)
        if diffs:
            raise ResultsError(
                f"{self.path} holds results of a different run ({_first(diffs)}); "
                "resume with the same settings or choose another --out"
            )
        if existing.header.get("config", {}).get("mode", "certify") != self.mode:
            raise ResultsError(f"{self.path} holds results of another mode; use another --out")
        self.existing = existing
        self.done = set(existing.indices)

    def open(self) -> ResultsWriter:
        """Create the file or prepare it for appending (dropping a torn last line)."""
        if self.create_parent:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "ab")
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    raise ResultsError(f"{self.path} is being written by another process") from None
            if self.resuming:
                assert self.existing is not None
                if self.existing.torn:
                    os.truncate(self.path, self.existing.valid_size)
            else:
                handle.truncate(0)
                if self.format == "tsv":
                    write_atomic(sidecar_path(self.path), json.dumps(self.header, indent=1) + "\n")
                    first = "\t".join(TSV_COLUMNS[self.mode]) + "\n"
                else:
                    first = json.dumps(self.header) + "\n"
                handle.write(first.encode("utf-8"))
                self._sync(handle)
                fsync_dir(self.path.parent)
        except BaseException:
            handle.close()
            raise
        self._handle = handle
        return self

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record as one line, flushed and fsync-ed."""
        if self._handle is None:
            raise RuntimeError("ResultsWriter.write() before open()")
        self._handle.write(encode_record(record, self.format, self.mode).encode("utf-8"))
        self._sync(self._handle)
        self.done.add(int(record["index"]))

    @staticmethod
    def _sync(handle: IO[bytes]) -> None:
        handle.flush()
        os.fsync(handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> ResultsWriter:
        return self.open() if self._handle is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a synced temporary file and a rename."""
    with replacing(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


# -- merging ------------------------------------------------------------------
@dataclass
class MergeSummary:
    """What :func:`merge_results` wrote."""

    out: Path
    parts: int
    records: int


def expected_indices(header: Mapping[str, Any]) -> list[int]:
    """The indices a run with ``header`` selects (before sharding)."""
    from .data.selection import select_indices

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
    files = [read_results(p) for p in parts]
    for item in files:
        if item.header is None:
            raise ResultsError(f"{item.path} has no deqcert header; cannot merge it")
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


def _plain(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "type"}
