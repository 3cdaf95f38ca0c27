"""The training loop: noise-augmented steps, implicit or Jacobian-free backward, checkpoint."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from ..models.grad import attach_implicit_backward, jacobian_penalty
from ..protocols import FixedPointSolver
from ..registry import create_dataset, create_model
from .config import TrainConfig
from .evaluate import evaluate


@dataclass
class TrainResult:
    """A trained model (in eval mode), its final metrics and per-epoch history."""

    model: Any
    metrics: dict[str, float]
    config: TrainConfig
    history: list[dict[str, float]] = field(default_factory=list)
    checkpoint: Path | None = None


def train(config: TrainConfig, *, out: Path | None = None, progress: bool = True) -> TrainResult:
    """Train the configured model; save a checkpoint to ``out`` when given."""
    with _threads(config.num_threads):
        started, cpu_started = time.perf_counter(), time.process_time()
        torch.manual_seed(config.seed)
        device = torch.device(config.device)
        train_set = _limited(
            create_dataset(config.dataset, split="train", **config.dataset_options),
            config.train_limit,
        )
        base = train_set.dataset if isinstance(train_set, Subset) else train_set
        model_options = _model_options(config, base)
        model = create_model(config.model, **model_options).to(device)
        history = _fit(model, train_set, config, device, progress)
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
        test_set = _limited(
            create_dataset(config.dataset, split=config.eval.split, **config.dataset_options),
            config.eval.limit,
        )
        model.eval()
        metrics = evaluate(
            model,
            test_set,
            sigma=config.sigma,
            solver=config.eval.solver.build(),
            batch_size=config.eval.batch_size,
            seed=config.seed + 2,
        )
        metrics["train_seconds"] = seconds
        metrics["train_cpu_seconds"] = cpu_seconds  # all threads; wall time varies with load
        if history:
            metrics["final_train_loss"] = history[-1]["loss"]
    result = TrainResult(model=model, metrics=metrics, config=config, history=history)
    if out is not None:
        from ..checkpoint import save_checkpoint

        result.checkpoint = save_checkpoint(
            model,
            out,
            {
                "train_config": config.model_dump(mode="json"),
                "dataset": {"name": config.dataset, **config.dataset_options},
                "sigma": config.sigma,
                "metrics": metrics,
                "history": history,
            },
        )
    return result


def _fit(
    model: nn.Module,
    data: Dataset[tuple[Tensor, int]],
    config: TrainConfig,
    device: torch.device,
    progress: bool,
) -> list[dict[str, float]]:
    """The training loop; returns one record per epoch."""
    loader = DataLoader(
        data,
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=False,
        generator=torch.Generator().manual_seed(config.seed),
    )
    steps_per_epoch = len(loader)
    total = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    optimizer = _optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        (lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))
        if config.schedule == "cosine"
        else (lambda step: 1.0),
    )
    noise_gen = torch.Generator(device=device).manual_seed(config.seed + 1)
    probe_gen = torch.Generator(device=device).manual_seed(config.seed + 3)
    solver = config.solver.build()
    backward_solver = config.backward_solver.build() if config.backward == "implicit" else None
    history: list[dict[str, float]] = []
    step = 0
    with _progress_bar(progress) as bar:
        task = bar.add_task("training", total=total) if bar is not None else None
        for epoch in range(config.epochs):
            model.train()
            sums = {"loss": 0.0, "penalty": 0.0, "correct": 0.0, "steps": 0.0, "n": 0.0}
            for x, y in loader:
                if step >= total:
                    break
                x, y = x.to(device), y.to(device)
                if config.shift:
                    x = random_shift(x, config.shift, noise_gen)
                noisy = x + config.sigma * torch.randn(
                    x.shape, generator=noise_gen, device=device, dtype=x.dtype
                )
                logits, penalty, mean_steps = _step_logits(
                    model, noisy, solver, backward_solver, config, probe_gen
                )
                loss = F.cross_entropy(logits, y)
                objective = loss + config.jac_reg * penalty if config.jac_reg else loss
                optimizer.zero_grad(set_to_none=True)
                objective.backward()
                if config.grad_clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                step += 1
                n = float(y.shape[0])
                sums["loss"] += loss.item() * n
                sums["penalty"] += penalty.item() * n
                sums["correct"] += float((logits.argmax(1) == y).sum())
                sums["steps"] += mean_steps * n
                sums["n"] += n
                if bar is not None and task is not None:
                    bar.update(
                        task,
                        advance=1,
                        description=f"epoch {epoch + 1}/{config.epochs} "
                        f"loss {sums['loss'] / sums['n']:.3f} "
                        f"acc {sums['correct'] / sums['n']:.3f} "
                        f"steps {sums['steps'] / sums['n']:.1f}",
                    )
            if sums["n"]:
                record = {
                    "epoch": float(epoch + 1),
                    "loss": sums["loss"] / sums["n"],
                    "jac_penalty": sums["penalty"] / sums["n"],
                    "noisy_train_accuracy": sums["correct"] / sums["n"],
                    "mean_solver_steps": sums["steps"] / sums["n"],
                }
                history.append(record)
                if bar is not None:
                    bar.console.print(
                        ", ".join(f"{k} {v:.4g}" for k, v in record.items()), highlight=False
                    )
            if step >= total:
                break
    return history


def _step_logits(
    model: Any,
    x: Tensor,
    solver: FixedPointSolver,
    backward_solver: FixedPointSolver | None,
    config: TrainConfig,
    probe_gen: torch.Generator,
) -> tuple[Tensor, Tensor, float]:
    """Logits with a graph to the parameters, the Jacobian penalty and mean solver steps."""
    u = model.inject(x)
    with torch.no_grad():
        u_fixed = u.detach()
        result = solver.solve(lambda z: model.f(z, u_fixed), model.init_state(u_fixed))
    z_in = result.z.detach().requires_grad_()
    z_out = model.f(z_in, u)
    penalty = jacobian_penalty(z_out, z_in, probe_gen) if config.jac_reg else z_out.new_zeros(())
    if backward_solver is not None:
        attach_implicit_backward(z_out, z_in, backward_solver)
    else:
        for _ in range(config.unroll_steps - 1):
            z_out = model.f(z_out, u)
    return model.readout(z_out), penalty, float(result.steps.float().mean())


def random_shift(x: Tensor, shift: int, generator: torch.Generator) -> Tensor:
    """Translate each image by up to ``shift`` pixels in each direction, filling with zeros."""
    batch, _, height, width = x.shape
    padded = F.pad(x, (shift, shift, shift, shift))
    offsets = torch.randint(
        0, 2 * shift + 1, (batch, 2), generator=generator, device=generator.device
    ).to(x.device)
    rows = offsets[:, :1] + torch.arange(height, device=x.device)  # (B, H)
    cols = offsets[:, 1:] + torch.arange(width, device=x.device)  # (B, W)
    index = torch.arange(batch, device=x.device).view(batch, 1, 1)
    out = padded.permute(0, 2, 3, 1)[index, rows.unsqueeze(2), cols.unsqueeze(1)]
    return out.permute(0, 3, 1, 2).contiguous()


def _model_options(config: TrainConfig, dataset: Any) -> dict[str, Any]:
    """Model options, with input geometry and class count taken from the dataset."""
    options = dict(config.model_options)
    shape = getattr(dataset, "input_shape", None)
    if shape is not None:
        options.setdefault("in_channels", shape[0])
        options.setdefault("image_size", shape[1])
    if hasattr(dataset, "num_classes"):
        options.setdefault("num_classes", dataset.num_classes)
    return options


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = model.parameters()
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def _limited(data: Dataset[tuple[Tensor, int]], limit: int | None) -> Dataset[tuple[Tensor, int]]:
    if limit is None or limit >= len(data):  # type: ignore[arg-type]
        return data
    return Subset(data, range(limit))


@contextmanager
def _threads(count: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _progress_bar(enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), transient=False
    ) as bar:
        yield bar
