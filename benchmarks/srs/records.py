"""The per-input records of a run: saved next to its tables, loaded back by ``--render``.

A records file is JSON lines: a head ``{"config": ..., "minutes": ...}``, then one
``{"method": key, **record}`` per certificate, the record as
:func:`deqcert.certify.dataset.certify_dataset` yields it.  Files written before the
benchmark kept whole records (flat ``candidate`` and ``nfe_split`` fields) still load.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from common import Record, gaussian

from deqcert.report import with_bound

from .config import Config
from .methods import DERIVED_BOUNDS


def save_records(
    path: Path, cfg: Config, rec: dict[str, list[Record]], minutes: float | None
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        handle.write(json.dumps({"config": asdict(cfg), "minutes": minutes}) + "\n")
        for key, rs in rec.items():
            for r in rs:
                handle.write(json.dumps({"method": key, **r}) + "\n")


def load_records(path: Path) -> tuple[Config, dict[str, list[Record]], float | None]:
    lines = path.read_text(encoding="utf-8").splitlines()
    head = json.loads(lines[0])
    raw = head["config"]
    raw["ablation"] = tuple(raw["ablation"])
    raw.setdefault("workers", 1)  # records written before the inputs were split over processes
    cfg = Config(**raw)
    rec: dict[str, list[Record]] = {}
    for line in lines[1:]:
        item = json.loads(line)
        rec.setdefault(item.pop("method"), []).append(_upgrade(item))
    return cfg, rec, head.get("minutes")


def _upgrade(item: dict[str, Any]) -> Record:
    """A record of the old flat format as a :func:`certify_dataset` record (others unchanged)."""
    if "certificate" in item:
        return item
    extra = {"candidate": item.pop("candidate", item["prediction"])}
    extra["nfe"] = item.pop("nfe_split", {})
    return {**item, "mode": "certify", "certificate": {"extra": extra}}


def with_derived(cfg: Config, rec: dict[str, list[Record]]) -> dict[str, list[Record]]:
    """``rec`` plus ``srs-1A-anchor-<bound>`` for each bound of :data:`DERIVED_BOUNDS`.

    Each is :func:`deqcert.report.with_bound` on the ``srs-1A-anchor`` records of the
    matrix inputs: the same sampling, another bound (neither is sound).
    """
    out = dict(rec)
    anchor = rec.get("srs-1A-anchor")
    if anchor:
        noise = gaussian(cfg.sigma)
        for bound in DERIVED_BOUNDS:
            out[f"srs-1A-anchor-{bound}"] = [
                with_bound(r, bound, noise, n=cfg.n, alpha=cfg.alpha)
                for r in anchor[: cfg.matrix_inputs]
            ]
    return out
