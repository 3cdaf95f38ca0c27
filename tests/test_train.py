"""Training: implicit and Jacobian-free gradients, the penalty, reproducibility, configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from deqcert import OptionError, checkpoint_metadata, create_model, create_solver, load_checkpoint
from deqcert.models.grad import attach_implicit_backward, jacobian_penalty
from deqcert.train import TrainConfig, main, random_shift, train

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

TINY: dict[str, Any] = {
    "model": "mlpdeq",
    "model_options": {"hidden": 16},
    "epochs": 3,
    "batch_size": 64,
    "lr": 5e-3,
    "train_limit": 256,
    "jac_reg": 0.5,
    "solver": {"name": "anderson", "options": {"max_iter": 15, "tol": 1e-3}},
    "eval": {"limit": 100},
    "seed": 3,
}


def _tiny_problem() -> tuple[Any, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = create_model("mlpdeq", hidden=6, image_size=4).double()
    with torch.no_grad():  # make f clearly contractive
        model.recurrent.weight.mul_(0.8 / torch.linalg.matrix_norm(model.recurrent.weight, 2))
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    weights = torch.randn(3, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    return model, x, weights


def _implicit_grad(
    model: Any, x: torch.Tensor, weights: torch.Tensor, task: float = 1.0, penalty: float = 0.0
) -> list[torch.Tensor]:
    """Gradient of ``task * <readout(z*), weights> + penalty * jacobian_penalty``."""
    model.zero_grad()
    u = model.inject(x)
    with torch.no_grad():
        z_star = create_solver("naive", max_iter=500, tol=1e-13, stop_mode="abs").solve(
            lambda z: model.f(z, u), model.init_state(u)
        ).z
    z_in = z_star.requires_grad_()
    z_out = model.f(z_in, u)
    reg = jacobian_penalty(z_out, z_in, torch.Generator().manual_seed(5))
    backward = create_solver("anderson", max_iter=200, tol=1e-13, stop_mode="abs")
    attach_implicit_backward(z_out, z_in, backward)
    (task * (model.readout(z_out) * weights).sum() + penalty * reg).backward()
    return [p.grad.clone() for p in model.parameters()]


def test_implicit_gradient_matches_unrolled_reference() -> None:
    model, x, weights = _tiny_problem()
    implicit = _implicit_grad(model, x, weights)
    # reference: backpropagate through 200 plain iterations (exact in the limit)
    model.zero_grad()
    u = model.inject(x)
    z = model.init_state(u)
    for _ in range(200):
        z = model.f(z, u)
    (model.readout(z) * weights).sum().backward()
    for got, want in zip(implicit, (p.grad for p in model.parameters()), strict=True):
        assert torch.allclose(got, want, rtol=1e-7, atol=1e-10)


def test_implicit_gradient_matches_finite_difference() -> None:
    model, x, weights = _tiny_problem()
    implicit = _implicit_grad(model, x, weights)
    names = [n for n, _ in model.named_parameters()]
    weight = dict(model.named_parameters())["recurrent.weight"]
    solver = create_solver("naive", max_iter=500, tol=1e-13, stop_mode="abs")

    def loss() -> float:
        with torch.no_grad():
            return float((model(x, solver) * weights).sum())

    eps = 1e-6
    for i, j in [(0, 0), (2, 5), (5, 1)]:
        with torch.no_grad():
            weight[i, j] += eps
            up = loss()
            weight[i, j] -= 2 * eps
            down = loss()
            weight[i, j] += eps
        fd = (up - down) / (2 * eps)
        assert abs(implicit[names.index("recurrent.weight")][i, j].item() - fd) < 1e-7


def test_implicit_backward_composes_with_jacobian_penalty() -> None:
    """The penalty's double backward must not trigger (or consume) the adjoint hook."""
    model, x, weights = _tiny_problem()
    both = _implicit_grad(model, x, weights, penalty=3.0)
    task = _implicit_grad(model, x, weights)
    reg = _implicit_grad(model, x, weights, task=0.0, penalty=3.0)
    assert any(r.abs().max() > 1e-6 for r in reg)
    for b, t, r in zip(both, task, reg, strict=True):
        assert torch.allclose(b, t + r, rtol=1e-9, atol=1e-12)


def test_jacobian_free_gradient_differs_from_implicit() -> None:
    model, x, weights = _tiny_problem()
    implicit = _implicit_grad(model, x, weights)
    model.zero_grad()
    u = model.inject(x)
    with torch.no_grad():
        z_star = create_solver("naive", max_iter=500, tol=1e-13).solve(
            lambda z: model.f(z, u), model.init_state(u)
        ).z
    (model.readout(model.f(z_star, u)) * weights).sum().backward()
    assert not torch.allclose(model.recurrent.weight.grad, implicit[1])


def test_jacobian_penalty_estimates_frobenius_norm() -> None:
    torch.manual_seed(0)
    w = torch.randn(5, 5, dtype=torch.float64)
    z_in = torch.zeros(20_000, 5, dtype=torch.float64, requires_grad=True)
    z_out = z_in @ w.T
    estimate = jacobian_penalty(z_out, z_in, torch.Generator().manual_seed(0))
    exact = torch.linalg.matrix_norm(w) ** 2 / 5
    assert abs(float(estimate) / float(exact) - 1) < 0.05


def test_tiny_training_reduces_loss_and_is_reproducible() -> None:
    config = TrainConfig.parse(TINY)
    first = train(config, progress=False)
    losses = [h["loss"] for h in first.history]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert first.metrics["clean_accuracy"] > 0.3  # 10 classes: chance is 0.1
    again = train(config, progress=False)
    for key, value in first.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[key], value)
    other = train(TrainConfig.parse({**TINY, "seed": 4, "epochs": 1}), progress=False)
    assert not torch.equal(other.model.output_layer.weight, first.model.output_layer.weight)


def test_jfb_training_runs_and_saves_checkpoint(tmp_path: Path) -> None:
    config = TrainConfig.parse({**TINY, "backward": "jfb", "epochs": 1, "max_steps": 2})
    result = train(config, out=tmp_path / "tiny.safetensors", progress=False)
    meta = checkpoint_metadata(tmp_path / "tiny.safetensors")
    assert meta["train_config"] == config.model_dump(mode="json")
    assert meta["metrics"] == pytest.approx(result.metrics)
    assert meta["sigma"] == 0.25 and meta["dataset"] == {"name": "mnist-sample"}
    loaded = load_checkpoint(tmp_path / "tiny.safetensors")
    x = torch.rand(2, 1, 28, 28)
    assert torch.allclose(loaded(x), result.model(x))


def test_config_rejects_unknown_and_bad_values() -> None:
    with pytest.raises(OptionError, match="unknown option 'epoch'"):
        TrainConfig.parse({"epoch": 3})
    with pytest.raises(OptionError, match="backward"):
        TrainConfig.parse({"backward": "phantom"})


def test_cli_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(
        'model = "mlpdeq"\nmodel_options = { hidden = 8 }\nepochs = 1\nmax_steps = 1\n'
        "train_limit = 64\n[eval]\nlimit = 20\n"
    )
    assert main([str(config), "--out", str(tmp_path / "m.safetensors"), "--quiet"]) == 0
    assert "noisy_accuracy" in capsys.readouterr().out
    assert (tmp_path / "m.safetensors").is_file()


@pytest.mark.parametrize("name", ["mdeq-small-sigma0.25", "mdeq-small-sigma0.5"])
def test_bundled_config_is_the_checkpoints_config(name: str) -> None:
    """The config under configs/ is exactly what the bundled checkpoint was trained with."""
    from deqcert import default_checkpoint

    config = TrainConfig.from_file(CONFIGS / f"{name}.toml")
    sigma = float(name.rsplit("sigma", 1)[1])
    meta = checkpoint_metadata(default_checkpoint(sigma))
    assert TrainConfig.parse(meta["train_config"]) == config
    assert meta["sigma"] == sigma == config.sigma


def test_random_shift_translates_each_image() -> None:
    x = torch.zeros(16, 1, 8, 8)
    x[:, 0, 3, 4] = 1.0
    shifted = random_shift(x, 2, torch.Generator().manual_seed(0))
    again = random_shift(x, 2, torch.Generator().manual_seed(0))
    assert torch.equal(shifted, again)
    positions = [tuple(img[0].nonzero()[0].tolist()) for img in shifted]
    assert all(abs(r - 3) <= 2 and abs(c - 4) <= 2 for r, c in positions)
    assert len(set(positions)) > 3  # images move independently
    assert torch.equal(shifted.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)))
