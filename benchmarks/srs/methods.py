"""The certifier configurations the benchmark compares, their keys and their labels.

Each :class:`Method` holds a flat certifier spec (:class:`deqcert.specs.ComponentSpec`) and is
built with :func:`deqcert.specs.build`, exactly as a certify config's ``certifier`` is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common import reference_solver, scaled_k

from deqcert.specs import ComponentSpec, build

from .config import Config

REFERENCE = "vanilla-30A"
SMALL_N = "vanilla-30A-nK"
"""Vanilla 30A with ``n = K``: Clopper-Pearson on ``K`` i.i.d. votes, what the ``reference``
branch of the sound SRS bound certifies from its ``K`` reference solves."""
DERIVED_BOUNDS = ("paper", "repro")
"""Bounds evaluated from the ``srs-1A-anchor`` run's counts (the bound does not change the
sampling); neither is sound."""


@dataclass
class Method:
    """One certifier configuration and the inputs it runs on."""

    key: str
    spec: ComponentSpec
    inputs: int
    group: str

    def certifier(self, **changes: Any) -> Any:
        """The certifier, with ``changes`` to its options (e.g. a smaller ``n`` to warm up)."""
        return build("certifier", self.spec.with_options(**changes), where=f"{self.key}:")


def methods(cfg: Config) -> list[Method]:
    noise = {"name": "gaussian", "sigma": cfg.sigma}
    common = {"noise": noise, "n0": cfg.n0, "n": cfg.n, "alpha": cfg.alpha}
    common["batch_size"] = cfg.batch
    k = scaled_k(cfg.k, cfg.n)

    def vanilla(key: str, steps: int, inputs: int, group: str, n: int = cfg.n, **kw: Any) -> Method:
        solver = {**reference_solver(cfg.compact), "max_iter": steps, **kw}
        spec = ComponentSpec(name="vanilla", **{**common, "n": n}, solver=solver)
        return Method(key, spec, inputs, group)

    def srs(
        key: str, solver: str, steps: int, start: str, inputs: int, group: str, K: int = k
    ) -> Method:
        spec = ComponentSpec(
            name="serialized",
            **common,
            solver={"name": solver, "max_iter": steps},
            reference_solver=reference_solver(cfg.compact),
            reference_samples=K,
            chain_start=start,
            bound="sound",
        )
        return Method(key, spec, inputs, group)

    m, a = cfg.matrix_inputs, cfg.ablation_inputs
    out = [vanilla(REFERENCE, 30, cfg.inputs, "headline")]
    out.append(vanilla(SMALL_N, 30, cfg.inputs, "headline", n=k))
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
            key = f"srs-1A-anchor-K{scaled_k(kk, cfg.n)}"
            out.append(srs(key, "anderson", 1, "anchor", a, "ablation", K=scaled_k(kk, cfg.n)))
    return out


def ablation_key(cfg: Config, k_at_10k: int) -> str:
    """The method key of the K-ablation run for ``K = k_at_10k`` (scaled with ``n``)."""
    k = scaled_k(k_at_10k, cfg.n)
    return "srs-1A-anchor" if k == scaled_k(cfg.k, cfg.n) else f"srs-1A-anchor-K{k}"


LABELS = {
    "vanilla-30A": "vanilla 30A (h_ref)",
    "vanilla-30A-nocompact": "vanilla 30A, no compaction",
    "vanilla-30A-nK": "vanilla 30A, n = K",
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
