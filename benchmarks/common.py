"""Helpers shared by the certification benchmarks: allocator, machine line, records, tables."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import multiprocessing
import os
import platform
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from deqcert import create_model, create_noise, load_checkpoint
from deqcert.certify.bounds import bound_cap, serialized_bound
from deqcert.certify.dataset import certify_dataset
from deqcert.checkpoint import default_checkpoint
from deqcert.report import RunStats, default_radii, summarize
from deqcert.results import ResultsFile

MMAP_THRESHOLD = 32 * 1024 * 1024
"""glibc's largest accepted ``M_MMAP_THRESHOLD`` on 64-bit (``HEAP_MAX_SIZE / 2``)."""
TRIM_THRESHOLD = 1 << 40
"""Never give the top of the heap back to the kernel during a run."""
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_allocator() -> bool:
    """Keep freed batch-sized tensors in the heap instead of unmapping them (glibc only).

    The same as launching with ``MALLOC_MMAP_THRESHOLD_=33554432`` and
    ``MALLOC_TRIM_THRESHOLD_=1099511627776``: tensors of a few MB are then
    reused from the heap rather than mapped afresh (and page-faulted on first
    touch) on every allocation.  Returns whether both settings were accepted.
    """
    name = ctypes.util.find_library("c")
    if platform.system() != "Linux" or name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mmap_ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    trim_ok = mallopt(_M_TRIM_THRESHOLD, min(TRIM_THRESHOLD, 2**31 - 1)) == 1
    return mmap_ok and trim_ok


def machine(threads: int | None = None) -> str:
    """One line describing the software and hardware the numbers come from."""
    cpu = platform.processor() or platform.machine()
    threads = torch.get_num_threads() if threads is None else threads
    return (
        f"torch {torch.__version__}, {threads} torch thread(s), {os.cpu_count()} CPU(s) "
        f"{cpu}, Python {platform.python_version()}"
    )


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table (first column left-aligned, the others right)."""
    align = ["---"] + ["--:"] * (len(headers) - 1)
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def pct(value: float) -> str:
    """A share as a percentage with one decimal."""
    return f"{100 * value:.1f}"


# -- certificates and their tables (shared by srs_vs_vanilla.py and verified.py) ---------------
#
# A record is what :func:`deqcert.certify.dataset.certify_dataset` yields for one input; the
# statistics come from :func:`deqcert.report.summarize`, the bounds from
# :func:`deqcert.certify.bounds.serialized_bound` and the radius from the noise sampler.

Record = dict[str, Any]
"""One record of :func:`deqcert.certify.dataset.certify_dataset`."""

RADIUS_STEPS = len(default_radii(1.0))
"""Table columns: certified accuracy at radii 0, sigma/4, ..., 2 sigma."""


def certify_one(certifier: Any, model: Any, dataset: Any, index: int, seed: int) -> Record:
    """The record of input ``index`` (its noise drawn from ``noise_generator(seed, index)``)."""
    return next(iter(certify_dataset(certifier, model, dataset, [index], seed=seed)))


def certify_interleaved(
    certifiers: Mapping[str, Any],
    model: Any,
    dataset: Any,
    indices: Sequence[int],
    seed: int,
    limits: Mapping[str, int] | None = None,
    progress: Callable[[int, int, dict[str, list[Record]]], None] | None = None,
) -> dict[str, list[Record]]:
    """Certify ``indices`` one by one, every certifier in turn on each (order rotated by index).

    Interleaving makes a change in machine load hit every certifier alike.  A certifier
    runs on input ``i`` only while ``i < limits[name]`` (when given); ``progress(done, i,
    records)`` is called after each input.
    """
    records: dict[str, list[Record]] = {name: [] for name in certifiers}
    for done, i in enumerate(indices, 1):
        todo = [name for name in certifiers if limits is None or i < limits[name]]
        shift = i % len(todo)
        for name in todo[shift:] + todo[:shift]:
            records[name].append(certify_one(certifiers[name], model, dataset, i, seed))
        if progress is not None:
            progress(done, i, records)
    return records


def candidate(record: Record) -> int:
    """The class the certifier selected (a serialized certificate's candidate, else its class)."""
    extra = record.get("certificate", {}).get("extra", {})
    return int(extra.get("candidate", record["prediction"]))


def nfe_split(record: Record) -> dict[str, int]:
    """A serialized certificate's NFE per solve kind (chains, warmup, anchor, reference)."""
    return dict(record.get("certificate", {}).get("extra", {}).get("nfe", {}))


def stats(records: Sequence[Record], radii: Sequence[float] = ()) -> RunStats:
    """:func:`deqcert.report.summarize` of in-memory records, at ``radii``."""
    results = ResultsFile(Path("records"), "jsonl", {"config": {"mode": "certify"}}, list(records))
    return summarize(results, radii)


def certified_accuracy(records: Sequence[Record], radius: float) -> float:
    """Share of inputs certified with the correct class at radius at least ``radius``."""
    return stats(records, [radius]).certified[radius]


def acr(records: Sequence[Record]) -> float:
    """Average certified radius: the radius of correct certificates, 0 otherwise."""
    return stats(records).acr or 0.0


def mean_seconds(records: Sequence[Record]) -> float:
    return stats(records).mean_seconds or 0.0


def gaussian(sigma: float) -> Any:
    """The benchmarks' noise: isotropic Gaussian of standard deviation ``sigma``."""
    return create_noise("gaussian", sigma=sigma)


def reference_solver(compact: bool = True) -> dict[str, Any]:
    """The solver defining ``h_ref``: Anderson, 30 steps, tolerance 1e-3, from zeros."""
    return {"name": "anderson", "max_iter": 30, "tol": 1e-3, "compact": compact}


def scaled_k(k: int, n: int) -> int:
    """``K`` for a run with ``n`` samples: ``k`` as given at ``n = 10,000``, scaled with ``n``."""
    return max(1, min(n, round(k * n / 10_000)))


def load_model(sigma: float, untrained: bool = False, path: Path | None = None) -> Any:
    """The model to certify: the checkpoint given, the bundled one for ``sigma``, or untrained."""
    if untrained:
        torch.manual_seed(0)
        return create_model("mdeq", preset="small").eval()
    return load_checkpoint(path or default_checkpoint(sigma))


def checkpoint_id(path: Path) -> str:
    """A checkpoint's file name and SHA-256 prefix."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return f"{path.name} (sha256 {digest}...)"


def radii(sigma: float) -> list[float]:
    """0 to ``2 sigma`` in steps of ``sigma / 4`` (:func:`deqcert.report.default_radii`)."""
    return default_radii(sigma)


def radius_names() -> list[str]:
    """Column names of :func:`radii`: ``0``, ``σ/4``, ``σ/2``, ..., ``2σ``."""
    names = []
    for i in range(RADIUS_STEPS):
        whole, quarters = divmod(i, 4)
        if quarters == 0:
            names.append("0" if whole == 0 else "σ" if whole == 1 else f"{whole}σ")
        else:
            num, den = (i // 2, 2) if quarters == 2 else (i, 4)
            names.append(f"{num if num > 1 else ''}σ/{den}")
    return names


def speedup(records: Sequence[Record], reference: Sequence[Record]) -> tuple[float, float]:
    """(wall, NFE) ratios of the reference over ``records`` on the same inputs."""
    ref = {r["index"]: r for r in reference}
    same = [r for r in records if r["index"] in ref]
    wall = sum(ref[r["index"]]["seconds"] for r in same) / sum(r["seconds"] for r in same)
    nfe = sum(ref[r["index"]]["nfe"] for r in same) / sum(r["nfe"] for r in same)
    return wall, nfe


def result_headers() -> list[str]:
    """Columns of :func:`result_row`."""
    return [
        "method",
        "inputs",
        *radius_names(),
        "ACR/σ",
        "s/input",
        "NFE/input",
        "speedup",
        "NFE ratio",
    ]


def result_row(
    sigma: float, label: str, records: Sequence[Record], reference: Sequence[Record]
) -> list[str]:
    """Certified accuracy at each radius, ACR, cost per input and speedups over ``reference``."""
    wall, nfe = speedup(records, reference)
    at = radii(sigma)
    run = stats(records, at)
    return [
        label,
        str(run.inputs),
        *(pct(run.certified[r]) for r in at),
        f"{(run.acr or 0.0) / sigma:.3f}",
        f"{run.mean_seconds or 0.0:.2f}",
        f"{run.mean_nfe or 0.0:,.0f}",
        f"{wall:.1f}x",
        f"{nfe:.1f}x",
    ]


def serialized_radius(
    sigma: float, bound: str, counts: dict[str, int], n: int, alpha: float
) -> float:
    """The radius the serialized ``bound`` gives on ``counts`` (0 when it abstains)."""
    return gaussian(sigma).radius(serialized_bound(bound, counts, n, alpha).p_lower)


@functools.lru_cache(maxsize=256)
def sound_cap(sigma: float, n: int, k: int, alpha: float) -> float:
    """The largest radius the ``sound`` serialized bound can give (:func:`bound_cap`)."""
    return gaussian(sigma).radius(bound_cap("sound", n, k, alpha))


# -- splitting the inputs over processes -------------------------------------------------------


def in_processes(fn: Callable[[Any], Any], jobs: Sequence[Any]) -> list[Any]:
    """``[fn(job) for job in jobs]``, each call in its own spawned process (one job: in this one).

    ``fn`` must be a module-level function of the script (spawned processes import it).
    """
    if len(jobs) == 1:
        return [fn(jobs[0])]
    with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
        return pool.map(fn, jobs)


def merge_records(parts: Sequence[dict[str, list[Record]]]) -> dict[str, list[Record]]:
    """The workers' records per method, in input order (methods in the first part's order)."""
    merged: dict[str, list[Record]] = {}
    for part in parts:
        for key, records in part.items():
            merged.setdefault(key, []).extend(records)
    for records in merged.values():
        records.sort(key=lambda r: r["index"])
    return merged


def default_workers() -> int:
    """Processes for a benchmark run: 2, or 1 on a machine with a single CPU."""
    return min(2, os.cpu_count() or 1)
