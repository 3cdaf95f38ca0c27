"""Why sound SRS certifies less than vanilla, per input, and where its NFE go."""

from __future__ import annotations

import statistics

from common import (
    Record,
    candidate,
    markdown_table,
    nfe_split,
    pct,
    radii,
    serialized_radius,
    sound_cap,
)

from .config import Config
from .methods import DERIVED_BOUNDS, REFERENCE, label_of

SOLVE_KINDS = ("chains", "warmup", "anchor", "reference")


def loss_table(cfg: Config, rec: dict[str, list[Record]]) -> str:
    """Per sound SRS method: (input, radius) pairs vanilla certifies and SRS does not, and why."""
    ref = {r["index"]: r for r in rec[REFERENCE]}
    hdr = ["method", "lost (input, radius) pairs", "gained", "capped by K", "mismatches d > 0"]
    hdr += ["C_m too low for K", "other candidate", "mean A-agreement on S (%)"]
    hdr += ["min A-agreement (%)", "inputs with d > 0", "mean (n_A - C_m)/n (%)"]
    rows = []
    for key, rs in rec.items():
        if not key.startswith("srs-") or any(bound in key for bound in DERIVED_BOUNDS):
            continue
        lost = gained = 0
        causes = {"cap": 0, "mismatch": 0, "votes": 0, "candidate": 0}
        agreement = []
        for r in rs:
            v = ref[r["index"]]
            c = r["counts"]
            agreement.append(1 - (c["d"] + c["reference_A"] - c["N1"]) / c["K"])
            for rad in radii(cfg.sigma):
                v_ok = v["correct"] and v["radius"] >= rad
                s_ok = r["correct"] and r["radius"] >= rad
                gained += s_ok and not v_ok
                if v_ok and not s_ok:
                    lost += 1
                    causes[_cause(cfg, r, v, rad)] += 1
        d_pos = sum(r["counts"]["d"] > 0 for r in rs)
        same = [r for r in rs if ref[r["index"]]["prediction"] == candidate(r)]
        vote_gap = (
            statistics.fmean(
                (ref[r["index"]]["counts"].get("n_A", 0) - r["counts"]["C_m"]) / cfg.n for r in same
            )
            if same
            else 0.0
        )
        rows.append(
            [
                label_of(key),
                str(lost),
                str(gained),
                str(causes["cap"]),
                str(causes["mismatch"]),
                str(causes["votes"]),
                str(causes["candidate"]),
                pct(statistics.fmean(agreement)),
                pct(min(agreement)),
                f"{d_pos}/{len(rs)}",
                pct(vote_gap).replace("-0.0", "0.0"),
            ]
        )
    return markdown_table(hdr, rows)


def _cause(cfg: Config, srs: Record, van: Record, radius: float) -> str:
    """Why sound SRS misses ``radius`` where vanilla reaches it (the first reason that applies).

    ``candidate``: SRS selected another class; ``cap``: beyond the radius the
    bound allows even with ``C_m = n`` and ``d = 0``; ``mismatch``: the same
    ``C_m`` with ``d = 0`` would have reached ``radius``; ``votes``: below the
    cap, but ``C_m`` is too low for the hypergeometric correction of ``K``.
    """
    c = {"selection_n": cfg.n0, **srs["counts"]}  # records before issue 16 lack selection_n
    if candidate(srs) != van["prediction"]:
        return "candidate"
    if sound_cap(cfg.sigma, cfg.n, c["K"], cfg.alpha) < radius:
        return "cap"
    if c["d"] > 0:
        reach = serialized_radius(cfg.sigma, "sound", {**c, "d": 0}, cfg.n, cfg.alpha)
        if reach > 0 and reach >= radius:  # certified (radius > 0) with no mismatch
            return "mismatch"
    return "votes"


def time_split_table(cfg: Config, rec: dict[str, list[Record]]) -> str:
    hdr = ["method", "chains", "warm-up", "anchor", "reference", "NFE/input"]
    rows = []
    for key, rs in rec.items():
        if not rs or not nfe_split(rs[0]):
            continue
        total = sum(r["nfe"] for r in rs)
        parts = {name: sum(nfe_split(r).get(name, 0) for r in rs) / total for name in SOLVE_KINDS}
        rows.append([label_of(key), *(pct(parts[p]) for p in parts), f"{total / len(rs):,.0f}"])
    return markdown_table(hdr, rows)
