"""The published MDEQ-Small / MDEQ-Large CIFAR-10 presets of ``mdeq``, on small fixtures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch.nn.utils import parametrize

from deqcert import (
    DataError,
    OptionError,
    create_dataset,
    create_model,
    create_solver,
    load_checkpoint,
    save_checkpoint,
)
from deqcert.models.mdeq import MDEQ
from deqcert.train import TrainConfig, train

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# channels / heads as published (cls_mdeq_SMALL.yaml, cls_mdeq_LARGE_reg.yaml)
PUBLISHED = {
    "cifar10-small": {"widths": (8, 16, 32), "head_widths": (7, 14, 28), "final": 200, "p": 0.2},
    "cifar10-large": {
        "widths": (32, 64, 128, 256),
        "head_widths": (14, 28, 56, 112),
        "final": 1680,
        "p": 0.22,
    },
}


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("preset", sorted(PUBLISHED))
def test_preset_follows_the_published_configuration(preset: str) -> None:
    want = PUBLISHED[preset]
    model: MDEQ = create_model("mdeq", preset=preset)
    o = model.options
    assert model.input_shape == (3, 32, 32)
    assert o.widths == want["widths"] and o.head_widths == want["head_widths"]
    assert o.final_channels == want["final"] and o.dropout == pytest.approx(want["p"])
    assert o.groups == 8 and o.expansion == 5 and o.stem_stride == 1
    # branches at 32, 16, 8 (, 4): full resolution first, each halved
    assert [s[1] for s in model.shapes] == [32 // 2**i for i in range(len(want["widths"]))]
    # the block is 5x wide inside, every block convolution is weight-normalised
    for block, width in zip(model.blocks, want["widths"], strict=True):
        assert block.conv1.out_channels == 5 * width
        assert parametrize.is_parametrized(block.conv1, "weight")
        assert parametrize.is_parametrized(block.conv2, "weight")
        assert block.norm1.num_groups == 8
    fuse_convs = [m for m in model.fuse.modules() if isinstance(m, torch.nn.Conv2d)]
    assert fuse_convs and all(parametrize.is_parametrized(c, "weight") for c in fuse_convs)
    # after fusion: ReLU, weight-normalised 1x1 convolution, group norm (4 groups, no affine)
    for post in model.fuse_norms:
        relu, conv, norm = post
        assert isinstance(relu, torch.nn.ReLU) and conv.kernel_size == (1, 1)
        assert parametrize.is_parametrized(conv, "weight")
        assert norm.num_groups == 4 and not norm.affine
    assert all(block.norm_last for block in model.blocks)
    assert len(model.injections) == 1  # the input drives the highest resolution only


def test_parameter_counts_are_those_of_the_published_sizes() -> None:
    # MDEQ (CIFAR-10, Bai et al. 2020, Table 1) reports about 10M parameters for the large
    # model; the small SRS configuration is a few hundred thousand.
    large = _count(create_model("mdeq", preset="cifar10-large"))
    small = _count(create_model("mdeq", preset="cifar10-small"))
    assert 7e6 < large < 14e6
    assert 1e5 < small < 5e5
    # the MNIST presets are untouched (the bundled checkpoints depend on them)
    assert _count(create_model("mdeq")) == 60026
    assert _count(create_model("mdeq", preset="large")) == 1075434


def test_explicit_options_win_over_the_preset() -> None:
    model = create_model("mdeq", preset="cifar10-small", widths=(8, 8, 8), dropout=0.0)
    assert model.options.widths == (8, 8, 8) and model.options.dropout == 0.0
    # another input depth drops the preset's 3-channel normalisation
    mono = create_model("mdeq", preset="cifar10-small", in_channels=1, image_size=28)
    assert mono.input_shape == (1, 28, 28) and mono.options.mean == (0.1307,)
    with pytest.raises(OptionError, match="head_widths"):
        create_model("mdeq", preset="cifar10-small", head_widths=(7, 14))
    with pytest.raises(OptionError, match="dropout"):
        create_model("mdeq", preset="cifar10-small", dropout=1.0)


def _small(**options: Any) -> MDEQ:
    torch.manual_seed(0)
    return create_model("mdeq", preset="cifar10-small", **options)  # type: ignore[no-any-return]


def test_dropout_only_in_training_one_mask_per_batch() -> None:
    model = _small()
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    model.train()
    u = model.inject(x)
    z = torch.rand(u.shape, generator=torch.Generator().manual_seed(2))
    first, again = model.f(z, u), model.f(z, u)
    assert torch.equal(first, again)  # variational: the same mask in every f of a batch
    mask = model._dropout_mask
    assert mask is not None
    dropped = (mask == 0).double().mean().item()
    assert abs(dropped - 0.2) < 0.02  # 28,672 draws: 0.2 +- 5 standard deviations
    values = torch.unique(mask).tolist()
    assert values[0] == 0.0 and values[1:] == [pytest.approx(1 / 0.8)]
    u2 = model.inject(x)  # a new batch draws a new mask
    assert not torch.equal(model.f(z, u2), first)
    model.eval()
    u_eval = model.inject(x)
    assert model._dropout_mask is None
    clean = model.f(z, u_eval)
    assert torch.equal(clean, model.f(z, u_eval)) and not torch.equal(clean, first)
    model.train()
    model.inject(x)
    with pytest.raises(DataError, match="dropout mask"):
        model.f(z[:2], u[:2])


@torch.no_grad()
def test_fixed_point_solve_and_shapes() -> None:
    model = _small().eval()
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    u = model.inject(x)
    assert u.shape == (3, sum(model.split_sizes))
    # only branch 0 is driven by the input
    parts = model.unpack(u)
    assert parts[0].abs().sum() > 0 and all(p.abs().sum() == 0 for p in parts[1:])
    solver = create_solver("anderson", max_iter=8, tol=1e-4, stop_mode="rel")
    logits, result = model.solve(x, solver)
    assert logits.shape == (3, 10) and torch.isfinite(logits).all()
    # the solver's residual is f's: ||f(z) - z|| / ||f(z)|| at the returned state
    # (with random weights the published cell does not converge: that needs training)
    fz = model.f(result.z, u)
    rel = (fz - result.z).norm(dim=1) / fz.norm(dim=1)
    assert result.nfe == 8 and torch.isfinite(rel).all()
    start = model.f(model.init_state(u), u)
    assert float(rel.max()) < 1.0 < float(start.norm(dim=1).min())
    # the same geometry with deqcert's cell and injection is contractive at initialisation
    ours = _small(cell="deqcert", injection_branches="all").eval()
    solver = create_solver("anderson", max_iter=60, tol=1e-2, stop_mode="rel")
    _, result = ours.solve(x, solver)
    assert bool(result.converged.all())
    u = ours.inject(x)
    fz = ours.f(result.z, u)
    assert float(((fz - result.z).norm(dim=1) / fz.norm(dim=1)).max()) <= 1e-2 * 1.01


def test_round_trip_through_a_checkpoint(tmp_path: Path) -> None:
    model = _small().eval()
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    loaded = load_checkpoint(path)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    solver = create_solver("naive", max_iter=5, tol=1e-12)
    assert torch.equal(model(x, solver), loaded(x, solver))
    assert loaded.describe() == model.describe()


def test_tiny_training_run_with_dropout_and_weight_norm() -> None:
    # the CIFAR-10 preset on the bundled MNIST sample (1x28x28): two optimiser steps
    config = TrainConfig.parse(
        {
            "model": "mdeq",
            "model_options": {"preset": "cifar10-small", "widths": [8, 8], "head_widths": [4, 4]},
            "epochs": 1,
            "batch_size": 8,
            "max_steps": 2,
            "train_limit": 16,
            "jac_reg": 0.4,
            "solver": {"name": "broyden", "max_iter": 4},
            "backward_solver": {"name": "broyden", "max_iter": 3},
            "eval": {"limit": 8, "batch_size": 8},
        }
    )
    before = _small(widths=(8, 8), head_widths=(4, 4), in_channels=1, image_size=28)
    result = train(config, progress=False)
    model = result.model
    assert model.options.preset == "cifar10-small" and model.input_shape == (1, 28, 28)
    assert len(result.history) == 1 and result.history[0]["loss"] > 0
    changed = [
        not torch.equal(a, b)
        for a, b in zip(before.state_dict().values(), model.state_dict().values(), strict=True)
    ]
    assert any(changed)
    assert "blocks.0.conv1.parametrizations.weight.original0" in model.state_dict()
    assert 0.0 <= result.metrics["clean_accuracy"] <= 1.0


@pytest.mark.parametrize("size", ["small", "large"])
def test_cifar10_training_configs_parse(size: str, tmp_path: Path) -> None:
    config = TrainConfig.from_file(CONFIGS / f"mdeq-{size}-cifar10.toml")
    assert config.dataset == "cifar10" and config.model == "mdeq"
    assert config.model_options == {"preset": f"cifar10-{size}"}
    assert config.solver.name == "broyden" and config.batch_size == 96
    model = create_model(config.model, **config.model_options)
    assert model.input_shape == (3, 32, 32)
    # without the CIFAR-10 files: one clear error naming where they were looked for
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        create_dataset(config.dataset, split="train", root=tmp_path)
