"""The figure: certified accuracy against radius, and the K ablation against speedup."""

from __future__ import annotations

from pathlib import Path

from common import Record, acr, scaled_k, sound_cap, speedup, stats

from .config import Config
from .methods import REFERENCE, SMALL_N, ablation_key, label_of


def plot(cfgs: list[Config], recs: list[dict[str, list[Record]]], path: Path) -> None:
    """Left: certified accuracy against radius; right: the K ablation (ACR and cap vs speedup)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(cfgs), 2, figsize=(11, 4.2 * len(cfgs)), squeeze=False)
    for (left, right), cfg, rec in zip(axes, cfgs, recs, strict=True):
        ref = rec[REFERENCE]
        top = 1.05 * max([2 * cfg.sigma] + [r["radius"] for r in ref])
        grid = [top * i / 200 for i in range(201)]
        keys = [REFERENCE] + [k for k in rec if k.startswith("srs-1A-") and len(k.split("-")) == 3]
        keys += [SMALL_N] if SMALL_N in rec else []
        for key in keys:
            wall, _ = speedup(rec[key], ref)
            name = label_of(key) + ("" if key == REFERENCE else f" ({wall:.1f}x faster)")
            curve = stats(rec[key], grid).certified
            left.plot(grid, [100 * curve[r] for r in grid], label=name)
        left.set_xlabel("L2 radius")
        left.set_ylabel("certified accuracy (%)")
        left.set_title(f"sigma = {cfg.sigma}, n = {cfg.n:,}, {cfg.inputs} inputs")
        left.legend(fontsize=8)
        left.grid(alpha=0.3)
        a = cfg.ablation_inputs
        van = ref[:a]
        points = []
        for kk in cfg.ablation:
            key, k = ablation_key(cfg, kk), scaled_k(kk, cfg.n)
            if key in rec:
                rs = rec[key][:a]
                cap = sound_cap(cfg.sigma, cfg.n, k, cfg.alpha)
                points.append((k, speedup(rs, van)[0], acr(rs), cap))
        if points:
            walls = [p[1] for p in points]
            right.plot(walls, [p[2] / cfg.sigma for p in points], "o-", label="SRS ACR / σ")
            right.plot(walls, [p[3] / cfg.sigma for p in points], "s--", label="cap of K / σ")
            for k, wall, value, _ in points:
                right.annotate(
                    f"K={k}",
                    (wall, value / cfg.sigma),
                    fontsize=8,
                    textcoords="offset points",
                    xytext=(4, -12),
                )
        right.axhline(acr(van) / cfg.sigma, color="C2", ls=":", label="vanilla 30A ACR / σ")
        right.set_xlabel("speedup over vanilla 30A (wall time)")
        right.set_ylabel("radius / σ")
        right.set_title(f"SRS 1A anchor, sound: K ablation ({a} inputs)")
        right.legend(fontsize=8)
        right.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
