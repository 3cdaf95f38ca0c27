"""Verified (exact serialized) smoothing against vanilla and sound serialized smoothing.

On the bundled contractive DEQ (``deqcert/checkpoints/contractive-*.safetensors``)
each certifier certifies the same test images with the same per-image noise
seeds (:func:`deqcert.certify.dataset.certify_dataset`), so the noisy inputs
are identical across certifiers:

* **vanilla**: every sample solved from zeros by Anderson (at most 30 steps,
  tolerance 1e-3), i.e. ``h_ref``;
* **verified**: warm-started cheap solves, every vote proven equal to the exact
  fixed point's prediction (``h_exact``), plain Clopper-Pearson;
* **serialized**: SRS chains (one Anderson step a sample) with the ``sound``
  hypergeometric bound on a reference subset.

Printed: one row per image (prediction and radius of each certifier), then per
certifier the NFE per image, the wall time, certified accuracy, and for
``verified`` how many samples needed extra steps or stayed undecided; then the
NFE and time ratios of vanilla to verified and how often their radii agree.
The models' clean and noisy accuracies come from the checkpoints' metadata
(the main MDEQ's when its bundled checkpoint exists).

Run: ``python benchmarks/verified.py [--images 20] [--n 2000] [--n0 100] [--threads 1]``
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import torch

from deqcert import create_certifier, create_dataset, load_checkpoint, registry
from deqcert.certify.dataset import certify_dataset
from deqcert.certify.verified import VerifiedCertifier
from deqcert.checkpoint import checkpoint_metadata
from deqcert.models.contractive import ContractiveConvDEQ, ContractiveMLPDEQ

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "deqcert" / "checkpoints"
RUNTIME = [
    (registry.models, "contractive-mlpdeq", ContractiveMLPDEQ),
    (registry.models, "contractive-convdeq", ContractiveConvDEQ),
    (registry.certifiers, "verified", VerifiedCertifier),
]


def register() -> None:
    """Register the contractive models and the certifier unless entry points already do."""
    for reg, name, obj in RUNTIME:
        if name not in reg:
            reg.register(name, obj)


def certifiers(n0: int, n: int, alpha: float, batch: int) -> dict[str, Any]:
    common = {"noise": {"name": "gaussian", "sigma": 0.25}, "n0": n0, "n": n, "alpha": alpha}
    common["batch_size"] = batch
    full = {"name": "anderson", "max_iter": 30, "tol": 1e-3}
    return {
        "vanilla": create_certifier("vanilla", solver=full, **common),
        "verified": create_certifier("verified", **common),
        "serialized": create_certifier(
            "serialized",
            reference_solver=full,
            reference_samples=min(400, n),
            bound="sound",
            **common,
        ),
    }


def accuracy_line(path: Path) -> str:
    meta = checkpoint_metadata(path)
    metrics = meta.get("metrics", {})
    return (
        f"{path.name}: {meta.get('model')} clean {metrics.get('clean_accuracy', float('nan')):.3f} "
        f"noisy {metrics.get('noisy_accuracy', float('nan')):.3f} "
        f"(sigma {meta.get('sigma')}, {int(metrics.get('eval_images', 0))} test images)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="contractive checkpoint")
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--batch-size", type=int, default=400)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", nargs="*", default=[], help="certifiers to leave out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    register()
    path = args.checkpoint or sorted(CHECKPOINTS.glob("contractive-*.safetensors"))[0]
    model = load_checkpoint(path)
    data = create_dataset("mnist-sample", split="test")
    step = max(len(data) // args.images, 1)
    indices = list(range(0, step * args.images, step))
    print("accuracy (from checkpoint metadata):")
    for candidate in [path, CHECKPOINTS / "mdeq-small-sigma0.25.safetensors"]:
        if candidate.exists():
            print("  " + accuracy_line(candidate))
    print(
        f"\n{len(indices)} test images, n0={args.n0} n={args.n} alpha={args.alpha} "
        f"batch={args.batch_size} threads={args.threads}, same noise for every certifier\n"
    )
    runs = {
        name: c
        for name, c in certifiers(args.n0, args.n, args.alpha, args.batch_size).items()
        if name not in args.skip
    }
    records = {
        name: list(certify_dataset(c, model, data, indices, seed=args.seed))
        for name, c in runs.items()
    }
    names = list(records)
    header = "index label " + " ".join(f"{name:>18s}" for name in names)
    print(header)
    for row, index in enumerate(indices):
        cells = []
        for name in names:
            rec = records[name][row]
            cells.append(f"{rec['prediction']:>3d} r={rec['radius']:.3f} {rec['nfe'] / 1000:5.1f}k")
        print(
            f"{index:5d} {records[names[0]][row]['label']:5d} "
            + " ".join(f"{c:>18s}" for c in cells)
        )
    print()
    summary = {}
    total = len(indices) * (args.n0 + args.n)
    for name in names:
        recs = records[name]
        nfe = sum(r["nfe"] for r in recs)
        seconds = sum(r["seconds"] for r in recs)
        acc = statistics.mean(float(r["correct"]) for r in recs)
        summary[name] = (nfe, seconds)
        line = (
            f"{name:10s} NFE/image {nfe / len(recs):9.0f} ({nfe / total:5.2f} per sample)  "
            f"time/image {seconds / len(recs):6.2f} s  certified acc (r>0) {acc:.2f}  "
            f"mean radius {statistics.mean(r['radius'] for r in recs):.3f}"
        )
        if name == "verified":
            extra = sum(
                r["counts"]["extra_steps"] + r["counts"]["selection_extra_steps"] for r in recs
            )
            undecided = sum(
                r["counts"]["undecided"] + r["counts"]["selection_undecided"] for r in recs
            )
            line += f"  extra-step samples {extra}/{total}  undecided {undecided}"
        if name == "serialized":
            line += f"  mean d {statistics.mean(r['counts']['d'] for r in recs):.2f}"
        print(line)
    if "vanilla" in records and "verified" in records:
        van, ver = records["vanilla"], records["verified"]
        same = sum(
            a["prediction"] == b["prediction"] and a["radius"] == b["radius"]
            for a, b in zip(van, ver, strict=True)
        )
        gap = max(abs(a["radius"] - b["radius"]) for a, b in zip(van, ver, strict=True))
        votes = sum(a["counts"]["n_A"] == b["counts"]["n_A"] for a, b in zip(van, ver, strict=True))
        print(
            f"\nvanilla / verified: NFE x{summary['vanilla'][0] / summary['verified'][0]:.2f}, "
            f"time x{summary['vanilla'][1] / summary['verified'][1]:.2f}; identical radii "
            f"{same}/{len(van)} (max |difference| {gap:.4f}), identical n_A {votes}/{len(van)}"
        )
    if "serialized" in records and "verified" in records:
        ser, ver = records["serialized"], records["verified"]
        print(
            f"serialized / verified: NFE x{summary['serialized'][0] / summary['verified'][0]:.2f}, "
            f"mean radius {statistics.mean(r['radius'] for r in ser):.3f} vs "
            f"{statistics.mean(r['radius'] for r in ver):.3f}"
        )


if __name__ == "__main__":
    main()
