"""Per-image certification cost on one device (a GPU, or the CPU with ``--device cpu``).

Methods, all at ``n`` estimation samples, ``n0 = 100`` selection samples and
``batch`` samples (SRS: chains) per solve, Gaussian noise, ``alpha = 0.001``:

* ``vanilla ES``: vanilla smoothing around ``h_ref`` (Anderson, at most 30
  steps, relative tolerance 1e-3, early stopping per sample, compaction);
* ``vanilla 30A``: the paper's baseline, 30 Anderson steps on every sample
  (tolerance 1e-12: no sample stops early);
* ``SRS 1N / 1A / 3A``: serialized smoothing with the ``sound`` bound, one
  plain step, one or three Anderson steps per sample along the chains, chains
  started by a warm-up batch (10 Anderson steps), ``K = 400`` reference
  samples solved with the ``h_ref`` solver.

Models: ``mnist``, the bundled ``mdeq`` (small) checkpoint at sigma 0.25 on
the bundled MNIST sample; ``mdeq-large``, the ``cifar10-large`` preset (the
published MDEQ-Large CIFAR-10 architecture) with **random weights** (torch
seed 0) on random 3x32x32 images: no trained CIFAR-10 model is available
here, so its certificates mean nothing; with random weights the solves do not
converge, so every solve runs its full step budget and the costs are those of
fixed step counts (``vanilla ES`` then equals ``vanilla 30A``).

Every method certifies the same inputs through
:func:`deqcert.certify.dataset.certify_dataset` (input ``i`` draws its noise
from ``noise_generator(seed, i)`` on the device), after one untimed warm-up
certificate per method (kernel selection, allocator); the table is computed
by :func:`deqcert.report.summarize`.  The seconds of a certificate include
every host-device synchronisation (the certificate's numbers are on the host).

Run ``python benchmarks/gpu.py`` (device ``auto``: CUDA when present) or
``--device cpu --quick`` (tiny ``n``, one input per model: checks the script,
not a measurement).  Writes a markdown table and the per-input records to
``--out`` (default ``benchmarks/results/gpu-<device kind>[-quick].md``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from deqcert import create_certifier, create_dataset, create_model, load_checkpoint
from deqcert.certify.dataset import certify_dataset
from deqcert.checkpoint import default_checkpoint
from deqcert.report import summarize
from deqcert.results import ResultsFile
from deqcert.run.resolve import resolve_device

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import checkpoint_id, machine, markdown_table, reference_solver, scaled_k  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MODELS = ("mnist", "mdeq-large")
METHODS = ("vanilla-ES", "vanilla-30A", "srs-1N", "srs-1A", "srs-3A")
PAPER_SECONDS = {"vanilla-30A": 12.89, "srs-1N": 1.02, "srs-1A": 1.79, "srs-3A": 2.55}
"""Gao et al. (2024), CIFAR-10 MDEQ-Large, one A100: seconds per image (their README)."""
FIXED_TOL = 1e-12
"""A tolerance no float32 solve reaches: the solver runs its full step budget."""


@dataclass
class Settings:
    device: str
    n: int = 10_000
    n0: int = 100
    batch: int = 400
    k: int = 400
    inputs: int = 3
    sigma: float = 0.25
    alpha: float = 0.001
    seed: int = 0
    warmup: bool = True
    quick: bool = False


def method_options(key: str, s: Settings, fixed: bool) -> tuple[str, dict[str, Any]]:
    """Certifier name and options of one method; ``fixed``: no solve may stop early."""
    common = {
        "noise": {"name": "gaussian", "sigma": s.sigma},
        "n0": s.n0,
        "n": s.n,
        "alpha": s.alpha,
        "batch_size": s.batch,
    }
    ref = reference_solver()
    if fixed:
        ref["tol"] = FIXED_TOL
    if key == "vanilla-ES":
        return "vanilla", {**common, "solver": ref}
    if key == "vanilla-30A":
        return "vanilla", {**common, "solver": {**ref, "tol": FIXED_TOL}}
    steps, name = {"srs-1N": (1, "naive"), "srs-1A": (1, "anderson"), "srs-3A": (3, "anderson")}[
        key
    ]
    warmup = {"name": "anderson", "max_iter": 10, **({"tol": FIXED_TOL} if fixed else {})}
    return "serialized", {
        **common,
        "solver": {"name": name, "max_iter": steps},
        "warmup_solver": warmup,
        "reference_solver": ref,
        "reference_samples": scaled_k(s.k, s.n),
        "chain_start": "warmup",
        "bound": "sound",
    }


class RandomImages:
    """``count`` seeded uniform images of ``shape`` (label 0): inputs for untrained models."""

    def __init__(self, shape: tuple[int, ...], count: int, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.images = torch.rand((count, *shape), generator=gen)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], 0


def load(name: str, s: Settings) -> tuple[Any, Any, str, bool]:
    """Model (on the device), dataset, a label for the table, and whether steps are fixed."""
    if name == "mnist":
        path = default_checkpoint(s.sigma)
        model = load_checkpoint(path, device=s.device)
        return model, create_dataset("mnist-sample", split="test"), checkpoint_id(path), False
    torch.manual_seed(0)
    model = create_model("mdeq", preset="cifar10-large").to(s.device).eval()
    data = RandomImages(model.input_shape, s.inputs + 1)
    return model, data, "mdeq cifar10-large preset, random weights (torch seed 0)", True


def device_name(device: str) -> str:
    dev = torch.device(device)
    if dev.type == "cuda":
        return f"{torch.cuda.get_device_name(dev)} (CUDA {torch.version.cuda})"
    return f"CPU: {machine()}"


def run_model(name: str, s: Settings) -> tuple[list[dict[str, Any]], dict[str, list[dict]]]:
    """Table rows and per-input records of every method on model ``name``."""
    model, data, label, fixed = load(name, s)
    indices = list(range(s.inputs))
    rows, records = [], {}
    for key in METHODS:
        certifier_name, options = method_options(key, s, fixed)
        certifier = create_certifier(certifier_name, **options)
        if s.warmup:  # an input that is not measured, at the real batch size
            small = {**options, "n0": min(s.n0, s.batch), "n": min(s.n, s.batch)}
            if certifier_name == "serialized":
                small["reference_samples"] = min(small["n"], small["reference_samples"])
            warm = create_certifier(certifier_name, **small)
            list(certify_dataset(warm, model, data, [len(data) - 1], seed=s.seed + 1))
        started = time.perf_counter()
        raw = list(certify_dataset(certifier, model, data, indices, seed=s.seed))
        wall = time.perf_counter() - started
        header = {"config": {"mode": "certify", "noise": options["noise"]},
                  "certifier": certifier.describe()}  # fmt: skip
        stats = summarize(ResultsFile(Path(key), "jsonl", header, raw), [0.0, s.sigma / 2])
        rows.append(
            {
                "model": name,
                "model_label": label,
                "method": key,
                "inputs": stats.inputs,
                "seconds_per_image": stats.mean_seconds,
                "nfe_per_image": stats.mean_nfe,
                "wall_seconds": wall,
                "certified_at_0": stats.certified.get(0.0),
                "certified_at_half_sigma": stats.certified.get(s.sigma / 2),
                "fixed_steps": fixed,
            }
        )
        records[key] = [_slim(r) for r in raw]
        print(f"{name} {key}: {stats.mean_seconds:.3f} s/image", file=sys.stderr, flush=True)
    return rows, records


def _slim(record: dict[str, Any]) -> dict[str, Any]:
    keys = ("index", "label", "prediction", "radius", "p_lower", "counts", "nfe", "seconds")
    return {k: record[k] for k in keys}


def table(rows: list[dict[str, Any]], s: Settings) -> str:
    headers = ["model", "method", "inputs", "s / image", "NFE / image", "cert. acc. r=0",
               "cert. acc. r=σ/2", "paper s / image (A100)"]  # fmt: skip
    body = []
    for r in rows:
        meaningful = not r["fixed_steps"]
        paper = PAPER_SECONDS.get(r["method"]) if r["model"] == "mdeq-large" else None
        body.append(
            [
                r["model"],
                r["method"],
                str(r["inputs"]),
                f"{r['seconds_per_image']:.3f}",
                f"{r['nfe_per_image']:,.0f}",
                f"{100 * r['certified_at_0']:.0f} %" if meaningful else "n/a (random)",
                f"{100 * r['certified_at_half_sigma']:.0f} %" if meaningful else "n/a (random)",
                f"{paper:.2f}" if paper is not None else "",
            ]
        )
    return markdown_table(headers, body)


def report(rows: list[dict[str, Any]], s: Settings, labels: dict[str, str]) -> str:
    lines = [
        f"# Certification cost per image on {device_name(s.device)}",
        "",
        f"n = {s.n:,}, n0 = {s.n0}, batch = {s.batch}, K = {scaled_k(s.k, s.n)}, "
        f"sigma = {s.sigma}, alpha = {s.alpha}, seed {s.seed}, {s.inputs} input(s) per model"
        + (" (quick: not a measurement)" if s.quick else ""),
        "",
        f"torch {torch.__version__}, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        *[f"- `{m}`: {label}" for m, label in labels.items()],
        "",
        table(rows, s),
        "",
        "Paper column: Gao et al. (2024), MDEQ-Large on CIFAR-10, trained weights, one A100; "
        "our `mdeq-large` row uses random weights with every solve at its full step budget, so "
        "it compares cost, not certified accuracy.",
    ]
    return "\n".join(lines) + "\n"


def parse(argv: Iterable[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated: mnist, mdeq-large")
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=400)
    p.add_argument("--inputs", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="tiny n, one input: a smoke test")
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up runs")
    p.add_argument("--out", type=Path, default=None, help="markdown output (records: .json)")
    return p.parse_args(list(argv) if argv is not None else None)


def main(argv: Iterable[str] | None = None) -> Path:
    args = parse(argv)
    models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise SystemExit(f"unknown model(s) {', '.join(unknown)}; accepted: {', '.join(MODELS)}")
    s = Settings(device=resolve_device(args.device), n=args.n, batch=args.batch, inputs=args.inputs)
    if args.quick:
        s.n, s.n0, s.batch, s.k, s.inputs, s.quick = 8, 4, 8, 4, 1, True
    s.warmup = not args.no_warmup
    if torch.device(s.device).type == "cuda":
        torch.backends.cudnn.benchmark = True
    rows, records, labels = [], {}, {}
    for name in models:
        model_rows, model_records = run_model(name, s)
        rows += model_rows
        records[name] = model_records
        labels[name] = model_rows[0]["model_label"]
    kind = torch.device(s.device).type
    out = args.out or RESULTS / f"gpu-{kind}{'-quick' if s.quick else ''}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    text = report(rows, s, labels)
    out.write_text(text)
    out.with_suffix(".json").write_text(
        json.dumps({"settings": asdict(s), "device": device_name(s.device), "rows": rows,
                    "records": records}, indent=1)  # fmt: skip
    )
    print(text)
    return out


if __name__ == "__main__":
    main()
