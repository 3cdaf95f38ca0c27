"""Verified (exact serialized) smoothing against vanilla and sound serialized smoothing.

On the bundled contractive DEQ (``deqcert/checkpoints/contractive-*.safetensors``)
three certifiers certify the first ``--images`` test images of ``mnist-sample``
with the same run seed (image ``i`` draws its noise from ``noise_generator(seed, i)``
through :func:`deqcert.certify.dataset.certify_dataset`, so the noisy inputs
are identical across certifiers), interleaved image by image with the order
rotated, so that a change in machine load hits them all alike:

* **vanilla 30A**: every sample solved from zeros by Anderson (at most 30
  steps, tolerance 1e-3), i.e. ``h_ref``;
* **verified**: the certifier's defaults (anchor start, two Anderson steps a
  round, a float64 check after each round), every vote proven equal to the
  exact fixed point's prediction (``h_exact``), plain Clopper-Pearson;
* **SRS 1A anchor, sound**: serialized chains (one Anderson step a sample)
  with the ``sound`` bound on ``K = 400`` reference samples (scaled with ``n``).

Prints one line per image and writes a markdown table (certified accuracy at
radii 0 to 2 sigma, ACR, cost per input, speedups over vanilla) with the
run's settings, how many verified radii equal vanilla's, the verified
samples that needed extra steps or stayed undecided, and the clean and noisy
accuracy of the contractive checkpoint against the MDEQ's (from the
checkpoints' metadata): what the contractive parametrisation costs.

Run ``python benchmarks/verified.py`` (full: ``n = 10,000``, written to
``benchmarks/results/verified.md``), ``--quick`` (``n = 1,000``, 4 images,
``verified-quick.md``), or pick ``--n``, ``--images``, ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

from deqcert import create_certifier, create_dataset, load_checkpoint
from deqcert.checkpoint import checkpoint_metadata

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    Record,
    certify_interleaved,
    checkpoint_id,
    default_workers,
    in_processes,
    machine,
    markdown_table,
    merge_records,
    reference_solver,
    result_headers,
    result_row,
    scaled_k,
    sound_cap,
    tune_allocator,
)

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "deqcert" / "checkpoints" / "contractive-convdeq-sigma0.25.safetensors"
MDEQ = ROOT / "deqcert" / "checkpoints" / "mdeq-small-sigma0.25.safetensors"
RESULTS = ROOT / "benchmarks" / "results"
K_AT_10K = 400
LABELS = {
    "vanilla": "vanilla 30A (h_ref)",
    "verified": "verified (h_exact)",
    "serialized": "SRS 1A anchor, sound",
}
QUICK = {"n": 1000, "images": 4}
FULL = {"n": 10_000, "images": 30}
"""30 images: measured 10.7 s per image (all three certifiers) at n = 10,000 and one thread on
a loaded 2-core machine, so about 3 minutes with two worker processes."""


def certifiers(args: argparse.Namespace, sigma: float) -> dict[str, Any]:
    common = {"noise": {"name": "gaussian", "sigma": sigma}, "n0": args.n0, "n": args.n}
    common.update(alpha=args.alpha, batch_size=args.batch)
    return {
        "vanilla": create_certifier("vanilla", solver=reference_solver(), **common),
        "verified": create_certifier("verified", **common),
        "serialized": create_certifier(
            "serialized",
            solver={"name": "anderson", "max_iter": 1},
            reference_solver=reference_solver(),
            reference_samples=scaled_k(K_AT_10K, args.n),
            chain_start="anchor",
            bound="sound",
            **common,
        ),
    }


def run(
    args: argparse.Namespace, model: Any, sigma: float, worker: int = 0, workers: int = 1
) -> dict[str, list[Record]]:
    """Certify image by image, every certifier in turn (order rotated); first calls untimed.

    ``worker`` of ``workers`` takes the images ``i`` with ``i % workers == worker`` (the noise
    of image ``i`` depends only on ``(seed, i)``, so the split changes no certificate).
    """
    data = create_dataset("mnist-sample", split="test")
    runs = certifiers(args, sigma)
    warm = dict(vars(args), n=min(args.n, 2 * args.batch))
    for c in certifiers(argparse.Namespace(**warm), sigma).values():
        c.certify(model, data[len(data) - 1][0], generator=torch.Generator().manual_seed(0))

    def progress(done: int, i: int, records: dict[str, list[Record]]) -> None:
        cells = [
            f"{name} {rs[-1]['prediction']:>2d} r={rs[-1]['radius']:.3f} {rs[-1]['seconds']:5.1f}s"
            for name, rs in records.items()
        ]
        label = records[next(iter(runs))][-1]["label"]
        print(f"image {i:3d} label {label}: " + "  ".join(cells), flush=True)

    indices = list(range(worker, args.images, workers))
    return certify_interleaved(runs, model, data, indices, args.seed, progress=progress)


def accuracy(path: Path) -> str:
    meta = checkpoint_metadata(path)
    m = meta.get("metrics", {})
    return (
        f"{meta.get('model')} ({path.name}): clean {100 * m['clean_accuracy']:.1f} %, "
        f"noisy {100 * m['noisy_accuracy']:.1f} % (sigma {meta.get('sigma')}, "
        f"{int(m['eval_images'])} test images, one draw each)"
    )


def notes(args: argparse.Namespace, rec: dict[str, list[Record]], sigma: float) -> list[str]:
    van, ver = rec["vanilla"], rec["verified"]
    pairs = list(zip(van, ver, strict=True))
    same = sum(a["prediction"] == b["prediction"] and a["radius"] == b["radius"] for a, b in pairs)
    gap = max(abs(a["radius"] - b["radius"]) for a, b in pairs)
    votes = sum(a["counts"]["n_A"] == b["counts"]["n_A"] for a, b in pairs)
    samples = len(ver) * (args.n0 + args.n)
    count = {k: sum(r["counts"][k] for r in ver) for k in ver[0]["counts"]}
    extra = count["extra_steps"] + count["selection_extra_steps"]
    undecided = count["undecided"] + count["selection_undecided"]
    cap = sound_cap(sigma, args.n, scaled_k(K_AT_10K, args.n), args.alpha)
    lines = [
        f"verified against vanilla 30A: identical class and radius on {same} of {len(pairs)} "
        f"images (largest radius difference {gap:.4f}, i.e. {gap / sigma:.4f}σ); "
        f"identical n_A on {votes} of {len(pairs)}",
        f"verified: {extra:,} of {samples:,} samples (selection and estimation) needed extra "
        f"steps, {undecided} stayed undecided (votes against the top class)",
        f"SRS 1A anchor, sound: no radius above {cap / sigma:.3f}σ is reachable with "
        f"K = {scaled_k(K_AT_10K, args.n)} (d = 0, C_m = n); verified and vanilla have no cap",
    ]
    versus = f"; against {accuracy(MDEQ)}" if MDEQ.exists() else " (no MDEQ checkpoint bundled)"
    lines.append(
        "cost of the contractive parametrisation (checkpoint metadata): "
        f"{accuracy(args.checkpoint)}{versus}"
    )
    return lines


def render(args: argparse.Namespace, rec: dict[str, list[Record]], sigma: float, model: Any) -> str:
    bound = model.contraction_bound()
    k = scaled_k(K_AT_10K, args.n)
    about = [
        f"model: {checkpoint_id(args.checkpoint)}, contraction constant L = {bound.lipschitz:.4f} "
        f"({bound.method})",
        f"sigma = {sigma}, n = {args.n:,}, n0 = {args.n0}, alpha = {args.alpha}, "
        f"batch {args.batch}, K = {k} (SRS), seed {args.seed}",
        f"images: first {args.images} of mnist-sample test, every certifier on the same noise",
        f"{args.workers} worker process(es), each with: {machine(args.threads)}; "
        f"allocator tuned: {args.tuned}",
        f"wall time of the whole run: {args.minutes:.1f} min",
    ]
    if args.quick:
        about.insert(0, "quick run (`--quick`): small n and few images, a check of the script")
    ref = rec["vanilla"]
    rows = [result_row(sigma, LABELS[name], rs, ref) for name, rs in rec.items()]
    return "\n".join(
        [
            "<!-- generated by benchmarks/verified.py: edit the script, not this file -->",
            "",
            *(f"- {line}" for line in about),
            "",
            "Certified accuracy (%) at each radius, ACR, mean wall seconds and NFE "
            "(per-sample evaluations of f, the verified check included) per input, and "
            "speedups over vanilla 30A on the same inputs.",
            "",
            markdown_table(result_headers(), rows),
            "",
            *(f"- {line}" for line in notes(args, rec, sigma)),
            "",
        ]
    )


def _worker(job: tuple[argparse.Namespace, float, int]) -> dict[str, list[Record]]:
    """One worker process: its own model copy and torch threads, its share of the images."""
    args, sigma, worker = job
    torch.set_num_threads(args.threads)
    tune_allocator()
    return run(args, load_checkpoint(args.checkpoint), sigma, worker, args.workers)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="n = 1,000, 4 images (under a minute)")
    p.add_argument("--checkpoint", type=Path, default=CHECKPOINT, help="contractive checkpoint")
    p.add_argument("--images", type=int, help=f"first N test images (default {FULL['images']})")
    p.add_argument("--n", type=int, help=f"estimation samples (default {FULL['n']:,})")
    p.add_argument("--n0", type=int, default=100)
    p.add_argument("--alpha", type=float, default=0.001)
    p.add_argument("--batch", type=int, default=400)
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument(
        "--workers", type=int, default=default_workers(), help="processes sharing the images"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="markdown output (default benchmarks/results/...)")
    args = p.parse_args()
    for name in ("images", "n", "workers", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    base = QUICK if args.quick else FULL
    args.images = args.images or base["images"]
    args.n = args.n or base["n"]
    args.out = args.out or RESULTS / f"verified{'-quick' if args.quick else ''}.md"
    return args


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    args.tuned = tune_allocator()
    model = load_checkpoint(args.checkpoint)
    sigma = checkpoint_metadata(args.checkpoint).get("sigma")
    if sigma is None:
        raise SystemExit(f"{args.checkpoint}: no training sigma in the checkpoint's metadata")
    sigma = float(sigma)
    start = time.perf_counter()
    images = len(create_dataset("mnist-sample", split="test"))
    if args.images >= images:  # the last image warms up the certifiers
        raise SystemExit(f"--images must be below {images} (mnist-sample test images)")
    jobs = [(args, sigma, w) for w in range(args.workers)]
    rec = merge_records(in_processes(_worker, jobs))
    args.minutes = (time.perf_counter() - start) / 60
    text = render(args, rec, sigma, model)
    print("\n" + text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
