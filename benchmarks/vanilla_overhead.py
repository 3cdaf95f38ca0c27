"""Vanilla certification's loop overhead against bare batched model evaluation.

For each small DEQ, the same noisy samples (same generator seed, same batch
split as CERTIFY: ``n0`` then ``n``) are solved twice with the same solver:

* **bare**: the noisy batches are drawn beforehand (not timed); the timed loop
  is only ``inject -> solver.solve -> readout -> argmax`` under
  ``torch.inference_mode``;
* **certify**: ``VanillaCertifier.certify`` (noise drawn per batch, counting,
  bookkeeping, the Clopper-Pearson bound).

Overhead = certify / bare - 1 (median over ``--repeats`` interleaved runs).
Drawing the noise is part of the certifier's loop and is timed separately
("noise"): for a tiny model it is most of the overhead.
Untrained models are used: the cost of a solve does not depend on accuracy,
and the solver's step count is the same in both loops (same inputs).

Run: ``python benchmarks/vanilla_overhead.py [--n 2000] [--repeats 5] [--threads 2]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from deqcert import create_certifier, create_model, create_solver
from deqcert.certify.sampling import batch_sizes

MODELS: dict[str, dict[str, Any]] = {
    "mlpdeq-28": {"name": "mlpdeq", "in_channels": 1, "image_size": 28, "hidden": 128},
    "convdeq-28": {"name": "convdeq", "in_channels": 1, "image_size": 28, "channels": 16},
}


def bare_seconds(model: Any, solver: Any, batches: list[torch.Tensor]) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for xb in batches:
            u = model.inject(xb)
            z0 = model.init_state(u)
            result = solver.solve(lambda z, u=u: model.f(z, u), z0)
            model.readout(result.z).argmax(dim=1).cpu()
    return time.perf_counter() - start


def measure(spec: dict[str, Any], n0: int, n: int, batch: int, repeats: int) -> dict[str, float]:
    options = dict(spec)
    torch.manual_seed(0)
    model = create_model(options.pop("name"), **options).eval()
    x = torch.rand(model.input_shape)
    solver = create_solver("anderson", max_iter=30, tol=1e-3)
    certifier = create_certifier(
        "vanilla",
        noise={"name": "gaussian", "sigma": 0.25},
        solver=solver,
        n0=n0,
        n=n,
        alpha=0.001,
        batch_size=batch,
    )
    noise = certifier.options.noise
    sizes = list(batch_sizes(n0, batch)) + list(batch_sizes(n, batch))

    def batches(seed: int) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return [x + noise.sample((b, *x.shape), generator=g) for b in sizes]

    bare, cert, draw = [], [], []
    certify_seconds(certifier, model, x, 0)  # warm-up (allocator, first-call costs)
    for rep in range(repeats):
        start = time.perf_counter()
        data = batches(rep)
        draw.append(time.perf_counter() - start)
        bare.append(bare_seconds(model, solver, data))
        cert.append(certify_seconds(certifier, model, x, rep))
    b, c, d = statistics.median(bare), statistics.median(cert), statistics.median(draw)
    return {"bare_s": b, "certify_s": c, "noise_s": d, "overhead": c / b - 1}


def certify_seconds(certifier: Any, model: Any, x: torch.Tensor, seed: int) -> float:
    start = time.perf_counter()
    certifier.certify(model, x, generator=torch.Generator().manual_seed(seed))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"n0={args.n0} n={args.n} batch={args.batch_size} threads={args.threads} "
        f"repeats={args.repeats} (medians)"
    )
    for name in args.models:
        r = measure(MODELS[name], args.n0, args.n, args.batch_size, args.repeats)
        print(
            f"{name:12s} bare {r['bare_s']:.3f} s  certify {r['certify_s']:.3f} s  "
            f"overhead {100 * r['overhead']:+.1f} %  (drawing the noise: {r['noise_s']:.3f} s)"
        )


if __name__ == "__main__":
    main()
