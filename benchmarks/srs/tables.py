"""The result tables and the lines under them: headline, full matrix, K ablation, checks."""

from __future__ import annotations

from common import (
    Record,
    acr,
    certified_accuracy,
    gaussian,
    markdown_table,
    radii,
    radius_names,
    result_headers,
    result_row,
    scaled_k,
    sound_cap,
    speedup,
)

from deqcert.certify.bounds import clopper_pearson_lower

from .config import Config
from .methods import REFERENCE, SMALL_N, ablation_key, label_of


def headline_table(cfg: Config, rec: dict[str, list[Record]]) -> str:
    ref = rec[REFERENCE]
    keys = [REFERENCE, SMALL_N]
    keys += [k for k in rec if k.startswith("srs-1") and len(k.split("-")) == 3]
    keys = [k for k in keys if len(rec.get(k, ())) == cfg.inputs]
    rows = [result_row(cfg.sigma, label_of(k), rec[k], ref) for k in keys]
    return markdown_table(result_headers(), rows)


def matrix_table(cfg: Config, rec: dict[str, list[Record]]) -> str:
    m = cfg.matrix_inputs
    ref = rec[REFERENCE][:m]
    order = [
        REFERENCE,
        "vanilla-30A-nocompact",
        "vanilla-5A",
        "vanilla-1A",
        *[k for k in rec if k[:6] in ("srs-1A", "srs-1N") and len(k.split("-")) == 3],
        "srs-3A-anchor",
        "srs-1B-anchor",
        "srs-1A-anchor-paper",
        "srs-1A-anchor-repro",
    ]
    rows = [result_row(cfg.sigma, label_of(k), rec[k][:m], ref) for k in order if k in rec]
    return markdown_table(result_headers(), rows)


def ablation_table(cfg: Config, rec: dict[str, list[Record]]) -> str:
    a = cfg.ablation_inputs
    ref = rec[REFERENCE][:a]
    hdr = ["K", "cap radius/σ", "inputs", *radius_names(), "ACR/σ"]
    hdr += ["s/input", "NFE/input", "speedup", "NFE ratio"]
    rows = []
    for kk in cfg.ablation:
        k, key = scaled_k(kk, cfg.n), ablation_key(cfg, kk)
        if key in rec:
            row = result_row(cfg.sigma, str(k), rec[key][:a], ref)
            cap = sound_cap(cfg.sigma, cfg.n, k, cfg.alpha)
            rows.append([row[0], f"{cap / cfg.sigma:.3f}", *row[1:]])
    row = result_row(cfg.sigma, "vanilla 30A", ref, ref)
    rows.append([row[0], f"{vanilla_cap(cfg) / cfg.sigma:.3f}", *row[1:]])
    return markdown_table(hdr, rows)


def vanilla_cap(cfg: Config) -> float:
    """The largest radius vanilla can certify: all ``n`` votes for ``A`` (Clopper-Pearson)."""
    return gaussian(cfg.sigma).radius(clopper_pearson_lower(cfg.n, cfg.n, cfg.alpha))


def _same(r: Record, b: Record, counts: tuple[str, ...] = ()) -> bool:
    """Whether two certificates agree on class, radius and the ``counts`` named."""
    return (r["prediction"], r["radius"], *(r["counts"][k] for k in counts)) == (
        b["prediction"],
        b["radius"],
        *(b["counts"][k] for k in counts),
    )


def identical_one_step(rec: dict[str, list[Record]]) -> list[str]:
    """Consistency: 1N / 1B against 1A, and vanilla 30A with and without compaction."""
    lines = []
    for start in ("warmup", "anchor", "carry"):
        base = {r["index"]: r for r in rec.get(f"srs-1A-{start}", [])}
        for other in (f"srs-1N-{start}", f"srs-1B-{start}"):
            rs = rec.get(other)
            if not rs or not base:
                continue
            same = sum(_same(r, base[r["index"]], ("C_m", "d")) for r in rs)
            lines.append(f"{label_of(other)}: {same}/{len(rs)} certificates identical to 1A")
    ref = {r["index"]: r for r in rec.get(REFERENCE, [])}
    plain = rec.get("vanilla-30A-nocompact", [])
    if plain and ref:
        same = sum(_same(r, ref[r["index"]]) for r in plain)
        lines.append(
            f"{label_of('vanilla-30A-nocompact')}: {same}/{len(plain)} certificates "
            "(class and radius) identical to vanilla 30A with compaction"
        )
    return lines


def targets(cfg: Config, rec: dict[str, list[Record]]) -> list[str]:
    """The issue's targets for sound SRS 1A: >= 10x wall speedup, <= 2 points lost up to sigma."""
    ref = rec[REFERENCE]
    lines = []
    for key in rec:
        if not key.startswith("srs-1A-") or len(key.split("-")) != 3:
            continue
        wall, _ = speedup(rec[key], ref)
        gaps = [
            certified_accuracy(ref, r) - certified_accuracy(rec[key], r)
            for r in radii(cfg.sigma)[:5]
        ]
        worst = max(gaps)
        lines.append(
            f"{label_of(key)}: {wall:.1f}x faster than vanilla 30A (target >= 10x: "
            f"{'met' if wall >= 10 else 'MISSED'}); largest certified-accuracy loss at radii "
            f"up to σ {100 * worst:.1f} points (target <= 2: "
            f"{'met' if worst <= 0.02 + 1e-12 else 'MISSED'})"
        )
        if SMALL_N in rec:
            lines.append(small_n_line(cfg, rec, key))
    return lines


def small_n_line(cfg: Config, rec: dict[str, list[Record]], key: str) -> str:
    """SRS against vanilla 30A with ``n = K``: cost ratio and certified accuracy up to 2 sigma."""
    small = rec[SMALL_N]
    wall, nfe = speedup(rec[key], small)
    gaps = [
        certified_accuracy(rec[key], r) - certified_accuracy(small, r) for r in radii(cfg.sigma)
    ]
    return (
        f"{label_of(key)} against {label_of(SMALL_N)} (K = {scaled_k(cfg.k, cfg.n)}): "
        f"{1 / wall:.1f}x its wall time, {1 / nfe:.1f}x its NFE; certified accuracy "
        f"{100 * min(gaps):+.1f} to {100 * max(gaps):+.1f} points at radii 0 to 2σ, "
        f"ACR {(acr(rec[key]) - acr(small)) / cfg.sigma:+.3f}σ"
    )
