"""Serialized (SRS) against vanilla randomized smoothing on the bundled noise-trained MDEQs.

Every method certifies the same test inputs of ``mnist-sample`` with the same
run seed (input ``i`` draws its noise from ``noise_seed(seed, i)``, through
:func:`deqcert.certify.dataset.certify_dataset`), and the methods are
interleaved input by input so that a change in machine load hits them all
alike.  Tables (printed, and written to ``benchmarks/results/``):

1. **headline** (all inputs): vanilla with 30 Anderson steps from zeros
   (``vanilla-30A``, which is also ``h_ref``) against SRS with one step and
   the ``sound`` bound, chains started by a warm-up batch or at the anchor;
2. **matrix** (the first ``--matrix-inputs``): vanilla 1A / 5A, SRS 3A and
   1B, and SRS 1A with the ``paper`` and ``repro`` bounds (computed from the
   ``sound`` run's counts: the bound does not change the sampling; both are
   marked as not sound); on the first ``--baseline-inputs`` also the
   consistency runs, vanilla 30A without compaction and SRS 1N, whose
   certificates must equal vanilla 30A's and SRS 1A's;
3. **K ablation** (the first ``--ablation-inputs``): the reference subset
   size ``K`` against the radius cap (the radius at ``d = 0``,
   ``C_m = n``) and certified accuracy against cost;
4. **loss analysis**: why sound SRS certifies less than vanilla, per input.

One step of ``naive``, ``anderson`` or ``broyden`` from the same state is the
same computation (each starts with the plain step ``z <- f(z)``), so SRS 1N,
1A and 1B give identical certificates; only 1A runs on every input unless
``--all-one-step`` is given, and the tables report how many 1N / 1B
certificates equal 1A's.

Run ``python benchmarks/srs_vs_vanilla.py`` (the full configuration, for
``make bench``), ``--quick`` (a few inputs at small ``n``, same tables), or
pick ``--n``, ``--inputs``, ... ; ``--render`` rebuilds the tables and the plot
from the saved per-input records without certifying anything.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from deqcert import create_certifier, create_dataset, create_model, load_checkpoint
from deqcert.certify import bounds
from deqcert.certify.dataset import certify_dataset
from deqcert.checkpoint import bundled_sigmas, default_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    Record,
    acr,
    certified_accuracy,
    checkpoint_id,
    default_workers,
    in_processes,
    machine,
    markdown_table,
    mean_seconds,
    merge_records,
    pct,
    phi_inv,
    radii,
    radius_names,
    reference_solver,
    result_headers,
    result_row,
    scaled_k,
    sound_cap,
    speedup,
    to_record,
    tune_allocator,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PLOT = ROOT / "docs" / "img" / "srs_vs_vanilla.png"
K_DEFAULT = 400
K_ABLATION = (100, 400, 1000, 2500)
REFERENCE = "vanilla-30A"


@dataclass
class Config:
    """Everything a run depends on (written next to its tables)."""

    sigma: float
    n: int = 10_000
    n0: int = 100
    alpha: float = 0.001
    batch: int = 400
    inputs: int = 200
    matrix_inputs: int = 50
    ablation_inputs: int = 50
    baseline_inputs: int = 20
    k: int = K_DEFAULT
    ablation: tuple[int, ...] = K_ABLATION
    seed: int = 0
    threads: int = 1
    workers: int = 2
    compact: bool = True
    all_one_step: bool = False
    carry: bool = False
    allocator: bool = True
    quick: bool = False
    checkpoint: str = ""


@dataclass
class Method:
    """One certifier configuration and the inputs it runs on."""

    key: str
    certifier: str
    options: dict[str, Any]
    inputs: int
    group: str
    note: str = ""


# -- the methods -----------------------------------------------------------------------------


def methods(cfg: Config) -> list[Method]:
    noise = {"name": "gaussian", "sigma": cfg.sigma}
    common = {"noise": noise, "n0": cfg.n0, "n": cfg.n, "alpha": cfg.alpha}
    common["batch_size"] = cfg.batch
    k = scaled_k(cfg.k, cfg.n)

    def vanilla(key: str, steps: int, inputs: int, group: str, **kw: Any) -> Method:
        solver = {**reference_solver(cfg.compact), "max_iter": steps, **kw}
        return Method(key, "vanilla", {**common, "solver": solver}, inputs, group)

    def srs(
        key: str, solver: str, steps: int, start: str, inputs: int, group: str, **kw: Any
    ) -> Method:
        options = {
            **common,
            "solver": {"name": solver, "max_iter": steps},
            "reference_solver": reference_solver(cfg.compact),
            "reference_samples": kw.pop("K", k),
            "chain_start": start,
            "bound": "sound",
        }
        return Method(key, "serialized", options, inputs, group, **kw)

    m, a = cfg.matrix_inputs, cfg.ablation_inputs
    out = [vanilla(REFERENCE, 30, cfg.inputs, "headline")]
    starts = ["warmup", "anchor"] + (["carry"] if cfg.carry else [])
    for start in starts:
        out.append(srs(f"srs-1A-{start}", "anderson", 1, start, cfg.inputs, "headline"))
        n_inputs = cfg.inputs if cfg.all_one_step else min(m, cfg.baseline_inputs)
        out.append(srs(f"srs-1N-{start}", "naive", 1, start, n_inputs, "check"))
    if cfg.compact:
        baseline = min(m, cfg.baseline_inputs)
        out.append(vanilla("vanilla-30A-nocompact", 30, baseline, "check", compact=False))
    out.append(vanilla("vanilla-1A", 1, m, "matrix"))
    out.append(vanilla("vanilla-5A", 5, m, "matrix"))
    out.append(srs("srs-3A-anchor", "anderson", 3, "anchor", m, "matrix"))
    out.append(srs("srs-1B-anchor", "broyden", 1, "anchor", m, "matrix"))
    for kk in cfg.ablation:
        if scaled_k(kk, cfg.n) != k:
            out.append(
                srs(
                    f"srs-1A-anchor-K{scaled_k(kk, cfg.n)}",
                    "anderson",
                    1,
                    "anchor",
                    a,
                    "ablation",
                    K=scaled_k(kk, cfg.n),
                )
            )
    return out


# -- running -------------------------------------------------------------------------------


def run(
    cfg: Config, model: Any, dataset: Any, plan: list[Method], worker: int = 0, workers: int = 1
) -> dict[str, list[Record]]:
    """Certify input by input, every method in turn (order rotated), timing each certificate.

    ``worker`` of ``workers`` takes the inputs ``i`` with ``i % workers == worker``; the noise of
    input ``i`` depends only on ``(seed, i)``, so the split does not change any certificate.
    """
    certifiers = {m.key: create_certifier(m.certifier, **m.options) for m in plan}
    warm_x = dataset[len(dataset) - 1][0]  # not one of the inputs
    for m in plan:  # first calls allocate buffers and load kernels: not timed
        options = {**m.options, "n": min(cfg.n, 2 * cfg.batch)}
        if m.certifier == "serialized":
            options["reference_samples"] = min(options["n"], options["reference_samples"])
        create_certifier(m.certifier, **options).certify(
            model, warm_x, generator=torch.Generator().manual_seed(0)
        )
    records: dict[str, list[Record]] = {m.key: [] for m in plan}
    start = time.perf_counter()
    inputs = max(m.inputs for m in plan)
    mine = list(range(worker, inputs, workers))
    tag = f"[sigma {cfg.sigma}" + (f", worker {worker + 1}/{workers}]" if workers > 1 else "]")
    for done, i in enumerate(mine, 1):
        todo = [m for m in plan if i < m.inputs]
        shift = i % len(todo)
        for m in todo[shift:] + todo[:shift]:
            raw = next(iter(certify_dataset(certifiers[m.key], model, dataset, [i], seed=cfg.seed)))
            records[m.key].append(to_record(raw))
        elapsed = time.perf_counter() - start
        rest = mine[done:]
        left = sum(
            sum(1 for j in rest if j < m.inputs) * mean_seconds(records[m.key]) for m in plan
        )
        print(
            f"{tag} input {i + 1}/{inputs} ({done}/{len(mine)} here): {elapsed / 60:.1f} min, "
            f"~{left / 60:.1f} min left",
            file=sys.stderr,
            flush=True,
        )
    return records


def _worker(job: tuple[Config, bool, Path | None, int]) -> dict[str, list[Record]]:
    """One worker process: its own model copy and torch threads, its share of the inputs."""
    cfg, untrained, path, worker = job
    torch.set_num_threads(cfg.threads)
    if cfg.allocator:
        tune_allocator()
    model = load_model(cfg, untrained, path)
    dataset = create_dataset("mnist-sample", split="test")
    return run(cfg, model, dataset, methods(cfg), worker, cfg.workers)


def run_parallel(cfg: Config, untrained: bool, path: Path | None) -> dict[str, list[Record]]:
    """Split the inputs over ``cfg.workers`` processes (spawned) and merge their records."""
    cfg.checkpoint = model_label(cfg, untrained, path)
    jobs = [(cfg, untrained, path, w) for w in range(cfg.workers)]
    return merge_records(in_processes(_worker, jobs))


# -- derived rows ----------------------------------------------------------------------------


def with_bound(cfg: Config, records: list[Record], bound: str) -> list[Record]:
    """The ``paper`` or ``repro`` bound applied to a ``sound`` run's counts (same sampling)."""
    rule = bounds.paper_lower if bound == "paper" else bounds.repro_lower
    a1 = a2 = cfg.alpha / 2
    out = []
    for r in records:
        c = r.counts
        p = rule(c["C_m"], c["N1"], c["N2"], cfg.n, a1, a2).p_lower
        candidate = r.candidate
        certified = p > 0.5
        radius = cfg.sigma * phi_inv(p) if certified else 0.0
        out.append(
            Record(
                index=r.index,
                label=r.label,
                prediction=candidate if certified else -1,
                radius=radius if certified else 0.0,
                correct=certified and candidate == r.label,
                p_lower=p,
                nfe=r.nfe,
                seconds=r.seconds,
                candidate=candidate,
                counts=c,
                nfe_split=r.nfe_split,
            )
        )
    return out


# -- statistics --------------------------------------------------------------------------------


# -- tables --------------------------------------------------------------------------------------


LABELS = {
    "vanilla-30A": "vanilla 30A (h_ref)",
    "vanilla-30A-nocompact": "vanilla 30A, no compaction",
    "vanilla-1A": "vanilla 1A",
    "vanilla-5A": "vanilla 5A",
}


def label_of(key: str) -> str:
    if key in LABELS:
        return LABELS[key]
    parts = key.split("-")  # srs-1A-anchor[-K1000|-paper|-repro]
    text = f"SRS {parts[1]} {parts[2]}"
    for extra in parts[3:]:
        if extra.startswith("K"):
            text += f", K={extra[1:]}"
        else:
            text += f", {extra} bound (NOT sound)"
    if len(parts) == 3 or parts[3].startswith("K"):
        text += ", sound"
    return text


def headline_table(cfg: Config, rec: dict[str, list[Record]]) -> str:
    ref = rec[REFERENCE]
    keys = [REFERENCE] + [k for k in rec if k.startswith("srs-1") and len(k.split("-")) == 3]
    keys = [k for k in keys if len(rec[k]) == cfg.inputs]
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
            rows.append(
                [row[0], f"{sound_cap(cfg.sigma, cfg.n, k, cfg.alpha) / cfg.sigma:.3f}", *row[1:]]
            )
    row = result_row(cfg.sigma, "vanilla 30A", ref, ref)
    rows.append([row[0], f"{_vanilla_cap(cfg) / cfg.sigma:.3f}", *row[1:]])
    return markdown_table(hdr, rows)


def _vanilla_cap(cfg: Config) -> float:
    p = bounds.clopper_pearson_lower(cfg.n, cfg.n, cfg.alpha)
    return cfg.sigma * phi_inv(p)


def loss_table(cfg: Config, rec: dict[str, list[Record]]) -> str:
    """Per sound SRS method: (input, radius) pairs vanilla certifies and SRS does not, and why."""
    ref = {r.index: r for r in rec[REFERENCE]}
    hdr = ["method", "lost (input, radius) pairs", "gained", "capped by K", "mismatches d > 0"]
    hdr += ["C_m too low for K", "other candidate", "mean A-agreement on S (%)"]
    hdr += ["min A-agreement (%)", "inputs with d > 0", "mean (n_A - C_m)/n (%)"]
    rows = []
    for key, rs in rec.items():
        if not key.startswith("srs-") or "paper" in key or "repro" in key:
            continue
        lost = gained = 0
        causes = {"cap": 0, "mismatch": 0, "votes": 0, "candidate": 0}
        agreement = []
        for r in rs:
            v = ref[r.index]
            c = r.counts
            agreement.append(1 - (c["d"] + c["reference_A"] - c["N1"]) / c["K"])
            for rad in radii(cfg.sigma):
                v_ok = v.correct and v.radius >= rad
                s_ok = r.correct and r.radius >= rad
                gained += s_ok and not v_ok
                if v_ok and not s_ok:
                    lost += 1
                    causes[_cause(cfg, r, v, rad)] += 1
        d_pos = sum(r.counts["d"] > 0 for r in rs)
        vote_gap = (
            statistics.fmean(
                (ref[r.index].counts.get("n_A", 0) - r.counts["C_m"]) / cfg.n
                for r in rs
                if ref[r.index].prediction == r.candidate
            )
            if any(ref[r.index].prediction == r.candidate for r in rs)
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
    c = srs.counts
    if srs.candidate != van.prediction:
        return "candidate"
    a = cfg.alpha / 2
    if sound_cap(cfg.sigma, cfg.n, c["K"], cfg.alpha) < radius:
        return "cap"
    no_mismatch = bounds.sound_serialized_lower(c["C_m"], 0, cfg.n, c["K"], a, a).p_lower
    if c["d"] > 0 and no_mismatch > 0.5 and cfg.sigma * phi_inv(no_mismatch) >= radius:
        return "mismatch"
    return "votes"


def time_split_table(cfg: Config, rec: dict[str, list[Record]]) -> str:
    hdr = ["method", "chains", "warm-up", "anchor", "reference", "NFE/input"]
    rows = []
    for key, rs in rec.items():
        if not rs or not rs[0].nfe_split:
            continue
        total = sum(r.nfe for r in rs)
        parts = {
            name: sum(r.nfe_split.get(name, 0) for r in rs) / total
            for name in ("chains", "warmup", "anchor", "reference")
        }
        rows.append([label_of(key), *(pct(parts[p]) for p in parts), f"{total / len(rs):,.0f}"])
    return markdown_table(hdr, rows)


def identical_one_step(rec: dict[str, list[Record]]) -> list[str]:
    """Consistency: 1N / 1B against 1A, and vanilla 30A with and without compaction."""
    lines = []
    for start in ("warmup", "anchor", "carry"):
        base = {r.index: r for r in rec.get(f"srs-1A-{start}", [])}
        for other in (f"srs-1N-{start}", f"srs-1B-{start}"):
            rs = rec.get(other)
            if not rs or not base:
                continue
            same = sum(
                (r.prediction, r.radius, r.counts["C_m"], r.counts["d"])
                == (
                    base[r.index].prediction,
                    base[r.index].radius,
                    base[r.index].counts["C_m"],
                    base[r.index].counts["d"],
                )
                for r in rs
            )
            lines.append(f"{label_of(other)}: {same}/{len(rs)} certificates identical to 1A")
    base = {r.index: r for r in rec.get(REFERENCE, [])}
    plain = rec.get("vanilla-30A-nocompact", [])
    if plain and base:
        same = sum(
            (r.prediction, r.radius) == (base[r.index].prediction, base[r.index].radius)
            for r in plain
        )
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
    return lines


# -- output --------------------------------------------------------------------------------------


def describe_run(cfg: Config, minutes: float | None) -> str:
    k = scaled_k(cfg.k, cfg.n)
    parts = [
        f"sigma = {cfg.sigma}, n = {cfg.n:,}, n0 = {cfg.n0}, alpha = {cfg.alpha}, "
        f"batch {cfg.batch}, K = {k}, seed {cfg.seed}",
        f"inputs: first {cfg.inputs} of mnist-sample test (matrix: first {cfg.matrix_inputs}, "
        f"K ablation: first {cfg.ablation_inputs})",
        f"model: {cfg.checkpoint}",
        f"reference solver: Anderson m=5, 30 steps, tol 1e-3 (rel), from zeros, "
        f"compaction {'on' if cfg.compact else 'off'}; allocator tuned: {cfg.allocator}",
        f"{cfg.workers} worker process(es), each with: {machine(cfg.threads)}",
    ]
    if minutes is not None:
        parts.append(f"wall time of the whole run: {minutes:.1f} min")
    return "\n".join(f"- {p}" for p in parts)


def render(cfg: Config, rec: dict[str, list[Record]], minutes: float | None) -> str:
    rec = dict(rec)
    anchor = rec.get("srs-1A-anchor")
    if anchor:
        m = cfg.matrix_inputs
        rec["srs-1A-anchor-paper"] = with_bound(cfg, anchor[:m], "paper")
        rec["srs-1A-anchor-repro"] = with_bound(cfg, anchor[:m], "repro")
    out = [
        f"### sigma = {cfg.sigma}" + (" (quick run)" if cfg.quick else ""),
        "",
        describe_run(cfg, minutes),
        "",
        "Certified accuracy (%) at each radius, ACR, mean wall seconds and NFE "
        "(per-sample evaluations of f) per input, and speedups over vanilla 30A on the "
        "same inputs.",
        "",
        f"#### Headline ({cfg.inputs} inputs)",
        "",
        headline_table(cfg, rec),
        "",
        *(f"- {line}" for line in targets(cfg, rec)),
        "",
        f"#### Full matrix (first {cfg.matrix_inputs} inputs)",
        "",
        matrix_table(cfg, rec),
        "",
        *(f"- {line}" for line in identical_one_step(rec)),
        "",
        f"#### Reference subset size K (first {cfg.ablation_inputs} inputs, SRS 1A anchor)",
        "",
        ablation_table(cfg, rec),
        "",
        "#### Where sound SRS loses certified accuracy (all radii 0 to 2σ)",
        "",
        "Each (input, radius) pair that vanilla 30A certifies correctly and SRS does not is "
        "put down to the first cause that applies: another candidate class; the radius lies "
        "beyond the cap of K (no C_m could reach it); mismatches (with d = 0 the same C_m "
        "would reach it); C_m too low for the hypergeometric correction of K (the rest). "
        "A-agreement is the share of S where Y_m = A exactly when Y_g = A.",
        "",
        loss_table(cfg, rec),
        "",
        "#### Share of NFE by solve kind",
        "",
        time_split_table(cfg, {k: v for k, v in rec.items() if k.startswith("srs-")}),
        "",
    ]
    return "\n".join(out)


def ablation_key(cfg: Config, k_at_10k: int) -> str:
    """The method key of the K-ablation run for ``K = k_at_10k`` (scaled with ``n``)."""
    k = scaled_k(k_at_10k, cfg.n)
    return "srs-1A-anchor" if k == scaled_k(cfg.k, cfg.n) else f"srs-1A-anchor-K{k}"


def plot(cfgs: list[Config], recs: list[dict[str, list[Record]]], path: Path) -> None:
    """Left: certified accuracy against radius; right: the K ablation (ACR and cap vs speedup)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(cfgs), 2, figsize=(11, 4.2 * len(cfgs)), squeeze=False)
    for (left, right), cfg, rec in zip(axes, cfgs, recs, strict=True):
        ref = rec[REFERENCE]
        top = 1.05 * max([2 * cfg.sigma] + [r.radius for r in ref])
        grid = [top * i / 200 for i in range(201)]
        keys = [REFERENCE] + [k for k in rec if k.startswith("srs-1A-") and len(k.split("-")) == 3]
        for key in keys:
            wall, _ = speedup(rec[key], ref)
            name = label_of(key) + ("" if key == REFERENCE else f" ({wall:.1f}x faster)")
            left.plot(grid, [100 * certified_accuracy(rec[key], r) for r in grid], label=name)
        left.set_xlabel("L2 radius")
        left.set_ylabel("certified accuracy (%)")
        left.set_title(f"sigma = {cfg.sigma}, n = {cfg.n:,}, {cfg.inputs} inputs")
        left.legend(fontsize=8)
        left.grid(alpha=0.3)
        a = cfg.ablation_inputs
        van = ref[:a]
        points = []
        for kk in cfg.ablation:
            key = ablation_key(cfg, kk)
            if key in rec:
                rs = rec[key][:a]
                points.append(
                    (
                        scaled_k(kk, cfg.n),
                        speedup(rs, van)[0],
                        acr(rs),
                        sound_cap(cfg.sigma, cfg.n, scaled_k(kk, cfg.n), cfg.alpha),
                    )
                )
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


def save_records(
    path: Path, cfg: Config, rec: dict[str, list[Record]], minutes: float | None
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        handle.write(json.dumps({"config": asdict(cfg), "minutes": minutes}) + "\n")
        for key, rs in rec.items():
            for r in rs:
                handle.write(json.dumps({"method": key, **asdict(r)}) + "\n")


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
        rec.setdefault(item.pop("method"), []).append(Record(**item))
    return cfg, rec, head.get("minutes")


# -- command line ----------------------------------------------------------------------------------


def parse(argv: Iterable[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="n=2000, 6 inputs: same tables, < 3 min")
    p.add_argument("--sigmas", type=float, nargs="*", help="default: every bundled checkpoint")
    p.add_argument("--n", type=int)
    p.add_argument("--n0", type=int, default=100)
    p.add_argument("--alpha", type=float, default=0.001)
    p.add_argument("--batch", type=int, default=400)
    counts = "one value, or one per sigma"
    p.add_argument("--inputs", type=int, nargs="+", help=f"headline inputs ({counts})")
    p.add_argument("--matrix-inputs", type=int, nargs="+", help=f"full matrix ({counts})")
    p.add_argument("--ablation-inputs", type=int, nargs="+", help=f"K ablation ({counts})")
    p.add_argument(
        "--baseline-inputs",
        type=int,
        nargs="+",
        help=f"consistency runs: vanilla 30A uncompacted, SRS 1N ({counts})",
    )
    p.add_argument("--k", type=int, default=K_DEFAULT, help="reference samples at n=10,000")
    p.add_argument(
        "--ablation", type=int, nargs="+", default=list(K_ABLATION), help="K values at n=10,000"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument(
        "--workers",
        type=int,
        default=default_workers(),
        help="processes sharing the inputs (default: 2, or 1 on a 1-CPU machine)",
    )
    p.add_argument("--no-compact", action="store_true", help="reference solves without compaction")
    p.add_argument("--no-allocator", action="store_true", help="leave glibc malloc as it is")
    p.add_argument("--all-one-step", action="store_true", help="run 1N on every input too")
    p.add_argument("--carry", action="store_true", help="add the 'carry' chain start")
    p.add_argument("--out", type=Path, help="markdown output (default benchmarks/results/...)")
    p.add_argument("--plot", type=Path, help=f"PNG output (default {PLOT.relative_to(ROOT)})")
    p.add_argument("--render", action="store_true", help="rebuild outputs from saved records")
    p.add_argument(
        "--untrained", action="store_true", help="debug the script on an untrained mdeq (small)"
    )
    p.add_argument("--checkpoint", type=Path, help="a checkpoint instead of the bundled one")
    args = p.parse_args(argv)
    for name in ("workers", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    return args


QUICK = {"n": 2000, "inputs": 6, "matrix_inputs": 3, "ablation_inputs": 3, "baseline_inputs": 3}
FULL = {
    "n": 10_000,
    "inputs": 200,
    "matrix_inputs": 50,
    "ablation_inputs": 30,
    "baseline_inputs": 10,
}
SECONDARY = {"inputs": 30, "matrix_inputs": 10, "ablation_inputs": 10, "baseline_inputs": 5}
"""Full-run counts for every sigma after the first, so that ``make bench`` fits in an hour."""


def configs(args: argparse.Namespace) -> list[Config]:
    """One configuration per sigma (default: every bundled checkpoint)."""
    sigmas = args.sigmas or ([0.25] if args.untrained or args.checkpoint else bundled_sigmas())
    if not sigmas:
        raise SystemExit("no bundled checkpoint found (deqcert/checkpoints/*.safetensors)")
    out = []
    for position, sigma in enumerate(sigmas):
        base = dict(QUICK if args.quick else FULL)
        if position and not args.quick:
            base.update(SECONDARY)
        for key in ("inputs", "matrix_inputs", "ablation_inputs", "baseline_inputs"):
            given = getattr(args, key)
            if given:
                base[key] = given[min(position, len(given) - 1)]
        cfg = Config(
            sigma=sigma,
            n=args.n or base["n"],
            n0=args.n0,
            alpha=args.alpha,
            batch=args.batch,
            inputs=base["inputs"],
            k=args.k,
            ablation=tuple(args.ablation),
            seed=args.seed,
            threads=args.threads,
            workers=args.workers,
            compact=not args.no_compact,
            all_one_step=args.all_one_step,
            carry=args.carry,
            allocator=not args.no_allocator,
            quick=args.quick,
        )
        cfg.matrix_inputs = min(cfg.inputs, base["matrix_inputs"])
        cfg.ablation_inputs = min(cfg.inputs, base["ablation_inputs"])
        cfg.baseline_inputs = min(cfg.matrix_inputs, base["baseline_inputs"])
        out.append(cfg)
    return out


def load_model(cfg: Config, untrained: bool, path: Path | None) -> Any:
    """The model to certify: the checkpoint given, the bundled one for sigma, or untrained."""
    if untrained:
        torch.manual_seed(0)
        return create_model("mdeq", preset="small").eval()
    return load_checkpoint(path or default_checkpoint(cfg.sigma))


def model_label(cfg: Config, untrained: bool, path: Path | None) -> str:
    """Which model :func:`load_model` loads (file name and SHA-256 prefix), for the tables."""
    if untrained:
        return "untrained mdeq (small), torch seed 0"
    return checkpoint_id(path or default_checkpoint(cfg.sigma))


def main(argv: Iterable[str] | None = None) -> None:
    args = parse(argv)
    cfgs = configs(args)
    suffix = "-quick" if args.quick else ""
    out = args.out or RESULTS / f"srs_vs_vanilla{suffix}.md"
    png = args.plot or (PLOT if not args.quick else RESULTS / "srs_vs_vanilla-quick.png")
    torch.set_num_threads(args.threads)
    tuned = tune_allocator() if not args.no_allocator else False
    sections, recs = [], []
    for cfg in cfgs:
        cfg.allocator = tuned
        records_path = out.with_name(f"{out.stem}-sigma{cfg.sigma:g}.jsonl")
        if args.render:
            cfg, rec, minutes = load_records(records_path)
        else:
            start = time.perf_counter()
            rec = run_parallel(cfg, args.untrained, args.checkpoint)
            minutes = (time.perf_counter() - start) / 60
            save_records(records_path, cfg, rec, minutes)
        text = render(cfg, rec, minutes)
        print(text, flush=True)
        sections.append(text)
        recs.append(rec)
        cfgs[cfgs.index(next(c for c in cfgs if c.sigma == cfg.sigma))] = cfg
    out.parent.mkdir(parents=True, exist_ok=True)
    header = (
        "<!-- generated by benchmarks/srs_vs_vanilla.py: edit the script, not this file -->\n\n"
    )
    out.write_text(header + "\n".join(sections), encoding="utf-8")
    plot(cfgs, recs, png)
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out} and {png}")


if __name__ == "__main__":
    main()
