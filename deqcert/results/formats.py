"""Results formats: JSON Lines and Cohen-style TSV, encoding one record."""

from __future__ import annotations

import datetime
import json
import math
import os
from collections.abc import Mapping, Sequence
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

from ..errors import ResultsError

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


def floor_digits(value: float, digits: int = 6) -> str:
    """``value`` in ``digits`` significant digits, rounded *down* (never claims a larger radius).

    ``0.4016756872`` -> ``"0.401675"`` (``.6g`` would give ``0.401676``, and a
    report at ``r = 0.401676`` would then count an input the JSONL does not);
    the nearest form is kept when it does not read back above ``value``.
    """
    nearest = f"{value:.{digits}g}"
    if not math.isfinite(value) or float(nearest) <= value:
        return nearest  # read back, it is not above value: keep the short form
    exact = Decimal(value)  # the float's exact binary value
    step = Decimal(1).scaleb(exact.adjusted() - digits + 1)
    return format(exact.quantize(step, rounding=ROUND_FLOOR).normalize(), "f")


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
        "radius": floor_digits(float(record.get("radius") or 0.0)),
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
    record["mode"] = "certify" if "radius" in cells else "predict"
    return record
