"""Comparing run headers (which keys change results) and describing index sets."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .formats import NEUTRAL_KEYS, TIMING_KEYS


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
