"""Reading a results file back: header, complete records, torn tail."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ResultsError
from .formats import TSV_COLUMNS, _decode_tsv, infer_format, sidecar_path
from .integrity import check_header, check_record, regular_or_absent


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
    regular_or_absent(path, "a results file")
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
            result.header = check_header(result.path, item, f"line {number} (the header)")
        elif "index" in item:
            if result.header is None:
                raise ResultsError(f"{result.path} does not start with a header record")
            check_record(result.path, number, item)
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
        check_header(sidecar, result.header)
    if not lines:
        return
    columns = tuple(lines[0].strip().split("\t"))
    if columns not in TSV_COLUMNS.values():
        raise ResultsError(
            f"{result.path}: unexpected TSV columns {' '.join(columns)}; expected "
            f"{' '.join(TSV_COLUMNS['certify'])}"
        )
    defaults = header_defaults(result.header) if "radius" in columns else {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            record = _decode_tsv(line.rstrip("\r"), columns)
        except ValueError:
            raise ResultsError(f"{result.path}, line {number}: malformed TSV row") from None
        result.records.append({**record, **defaults})


def header_defaults(header: dict[str, Any] | None) -> dict[str, Any]:
    """What TSV certify rows leave out and the header knows: the bound and whether it is sound.

    A TSV row has Cohen et al.'s columns only; without these, a ``repro`` run
    read back from TSV would lose its UNSOUND mark.
    """
    certifier = (header or {}).get("certifier")
    if not isinstance(certifier, dict):
        return {}
    name = certifier.get("name")
    bound = certifier.get("bound")
    if bound is None and name == "vanilla":
        bound = "clopper-pearson"
    out: dict[str, Any] = {}
    if isinstance(bound, str):
        out["bound"] = bound
    if isinstance(certifier.get("sound"), bool):
        out["sound"] = certifier["sound"]
    elif name == "vanilla":
        out["sound"] = True
    return out
