"""Clean and noisy accuracy of a trained model on a test split."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..protocols import FixedPointSolver


@torch.no_grad()
def evaluate(
    model: Any,
    data: Dataset[tuple[Tensor, int]],
    *,
    sigma: float,
    solver: FixedPointSolver | None = None,
    batch_size: int = 500,
    seed: int = 0,
) -> dict[str, float]:
    """Clean and noisy (one draw per image) accuracy, convergence rate and solver steps.

    ``noisy_*`` figures use one Gaussian draw at ``sigma`` per image from a
    generator seeded with ``seed``; the solver defaults to the reference solve.
    """
    solver = solver if solver is not None else model.default_solver()
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    counts = {k: 0.0 for k in ("n", "clean", "noisy", "clean_conv", "noisy_conv", "steps")}
    for x, y in DataLoader(data, batch_size=batch_size, shuffle=False):
        x, y = x.to(device), y.to(device)
        noisy = x + sigma * torch.randn(x.shape, generator=gen, device=device, dtype=x.dtype)
        clean_logits, clean = model.solve(x, solver)
        noisy_logits, result = model.solve(noisy, solver)
        counts["n"] += y.shape[0]
        counts["clean"] += float((clean_logits.argmax(1) == y).sum())
        counts["noisy"] += float((noisy_logits.argmax(1) == y).sum())
        counts["clean_conv"] += float(clean.converged.sum())
        counts["noisy_conv"] += float(result.converged.sum())
        counts["steps"] += float(result.steps.sum())
    n = max(counts["n"], 1.0)
    return {
        "clean_accuracy": counts["clean"] / n,
        "noisy_accuracy": counts["noisy"] / n,
        "clean_convergence_rate": counts["clean_conv"] / n,
        "noisy_convergence_rate": counts["noisy_conv"] / n,
        "noisy_mean_solver_steps": counts["steps"] / n,
        "eval_images": counts["n"],
    }
