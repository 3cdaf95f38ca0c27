"""Certify input by input, every method in turn, over worker processes."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch
from common import (
    Record,
    certify_interleaved,
    checkpoint_id,
    in_processes,
    load_model,
    machine,
    mean_seconds,
    merge_records,
    tune_allocator,
)

from deqcert import create_dataset
from deqcert.checkpoint import default_checkpoint

from .config import Config
from .methods import Method, methods


def run(
    cfg: Config, model: Any, dataset: Any, plan: list[Method], worker: int = 0, workers: int = 1
) -> dict[str, list[Record]]:
    """Certify input by input, every method in turn (order rotated), timing each certificate.

    ``worker`` of ``workers`` takes the inputs ``i`` with ``i % workers == worker``; the noise of
    input ``i`` depends only on ``(seed, i)``, so the split does not change any certificate.
    """
    certifiers = {m.key: m.certifier() for m in plan}
    warm_x = dataset[len(dataset) - 1][0]  # not one of the inputs
    for m in plan:  # first calls allocate buffers and load kernels: not timed
        n = min(cfg.n, 2 * cfg.batch)
        changes: dict[str, Any] = {"n": n}
        if m.spec.name == "serialized":
            changes["reference_samples"] = min(n, m.spec.options["reference_samples"])
        m.certifier(**changes).certify(model, warm_x, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    inputs = max(m.inputs for m in plan)
    mine = list(range(worker, inputs, workers))
    tag = f"[sigma {cfg.sigma}" + (f", worker {worker + 1}/{workers}]" if workers > 1 else "]")

    def progress(done: int, i: int, records: dict[str, list[Record]]) -> None:
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

    limits = {m.key: m.inputs for m in plan}
    return certify_interleaved(certifiers, model, dataset, mine, cfg.seed, limits, progress)


def worker(job: tuple[Config, bool, Path | None, int]) -> dict[str, list[Record]]:
    """One worker process: its own model copy and torch threads, its share of the inputs."""
    cfg, untrained, path, index = job
    torch.set_num_threads(cfg.threads)
    if cfg.allocator:
        tune_allocator()
    model = load_model(cfg.sigma, untrained, path)
    dataset = create_dataset("mnist-sample", split="test")
    return run(cfg, model, dataset, methods(cfg), index, cfg.workers)


def run_parallel(cfg: Config, untrained: bool, path: Path | None) -> dict[str, list[Record]]:
    """Split the inputs over ``cfg.workers`` processes (spawned) and merge their records."""
    cfg.checkpoint = model_label(cfg, untrained, path)
    cfg.machine = machine(cfg.threads)
    jobs = [(cfg, untrained, path, w) for w in range(cfg.workers)]
    return merge_records(in_processes(worker, jobs))


def model_label(cfg: Config, untrained: bool, path: Path | None) -> str:
    """Which model :func:`load_model` loads (file name and SHA-256 prefix), for the tables."""
    return (
        "untrained mdeq (small), torch seed 0"
        if untrained
        else checkpoint_id(path or default_checkpoint(cfg.sigma))
    )
