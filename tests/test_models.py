"""Built-in equilibrium models: protocol, shapes, options and convergence."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _helpers import builtin_names

import deqcert
from deqcert import DataError, EquilibriumModel, OptionError, create_model, create_solver
from deqcert.models.mdeq import MDEQ

MODELS = builtin_names("model")
"""Every built-in model (the conformance suite covers plugins too, in test_conformance.py)."""


def _inputs(batch: int = 3, seed: int = 0, shape: tuple[int, ...] = (1, 28, 28)) -> torch.Tensor:
    return torch.rand((batch, *shape), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", MODELS)
def test_registered_and_satisfies_protocol(name: str) -> None:
    assert name in deqcert.list_models()
    torch.manual_seed(0)
    model = create_model(name)
    assert model.describe()["name"] == name
    assert model.num_classes == 10
    assert isinstance(model, EquilibriumModel)
    assert isinstance(model, torch.nn.Module)


@pytest.mark.parametrize("name", MODELS)
def test_state_shapes(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name)
    x = _inputs()
    u = model.inject(x)
    z0 = model.init_state(u)
    assert z0.shape == u.shape and u.shape[0] == 3
    assert torch.count_nonzero(z0) == 0
    z1 = model.f(z0, u)
    assert z1.shape == z0.shape and torch.isfinite(z1).all()
    assert model.readout(z1).shape == (3, 10)


@pytest.mark.parametrize(("name", "options"), [("mdeq", {"widths": (8, 16)}), ("convdeq", {}),
                                               ("mlpdeq", {})])
def test_forward_converges_from_zeros(name: str, options: dict[str, Any]) -> None:
    torch.manual_seed(0)
    model = create_model(name, **options).eval()
    x = _inputs(batch=4)
    logits, result = model.solve(x, create_solver("anderson", max_iter=60, tol=1e-3))
    assert bool(result.converged.all())
    assert logits.shape == (4, 10)
    assert torch.allclose(model(x, create_solver("anderson", max_iter=60, tol=1e-3)), logits)
    # f really is at its fixed point there
    u = model.inject(x)
    with torch.no_grad():
        gap = (model.f(result.z, u) - result.z).flatten(1).norm(dim=1)
    assert (gap <= 2e-3 * model.f(result.z, u).flatten(1).norm(dim=1)).all()


@pytest.mark.parametrize("name", MODELS)
def test_unknown_option_rejected(name: str) -> None:
    with pytest.raises(OptionError, match="unknown option 'widht'"):
        create_model(name, widht=3)


def test_normalisation_length_checked() -> None:
    with pytest.raises(OptionError, match="mean needs 1 or in_channels=3"):
        create_model("convdeq", in_channels=3, mean=(0.5, 0.5))


def test_wrong_input_shape_is_data_error() -> None:
    model = create_model("mlpdeq")
    with pytest.raises(DataError, match=r"expected inputs of shape \(B, 1, 28, 28\)"):
        model.inject(torch.rand(2, 3, 32, 32))


def test_normalisation_happens_inside_inject() -> None:
    torch.manual_seed(0)
    plain = create_model("mlpdeq", mean=(0.0,), std=(1.0,))
    shifted = create_model("mlpdeq", mean=(0.5,), std=(2.0,))
    shifted.load_state_dict(plain.state_dict())
    x = _inputs()
    assert torch.allclose(shifted.inject(x), plain.inject((x - 0.5) / 2.0), atol=1e-6)
    assert "pixel_mean" not in plain.state_dict()  # rebuilt from the options


def test_mdeq_presets_and_branch_geometry() -> None:
    small = create_model("mdeq")
    assert small.options.widths == (16, 32) and small.sizes == [14, 7]
    large = create_model("mdeq", preset="large")
    assert large.options.widths == (32, 64, 128) and large.sizes == [28, 14, 7]
    custom = create_model("mdeq", widths=(8, 8, 8), image_size=32, in_channels=3)
    assert custom.sizes == [16, 8, 4]
    assert custom.inject(_inputs(shape=(3, 32, 32))).shape == (3, 8 * (256 + 64 + 16))


def test_mdeq_state_is_flat_and_unpacks() -> None:
    model: MDEQ = create_model("mdeq", widths=(8, 16))
    branches = [torch.randn(2, 8, 14, 14), torch.randn(2, 16, 7, 7)]
    flat = model.pack(branches)
    assert flat.shape == (2, 8 * 196 + 16 * 49)
    for got, want in zip(model.unpack(flat), branches, strict=True):
        assert torch.equal(got, want)


def test_mdeq_branches_interact() -> None:
    """Fusion: perturbing the low-resolution branch changes the high-resolution one."""
    torch.manual_seed(0)
    model: MDEQ = create_model("mdeq", widths=(8, 16))
    u = model.inject(_inputs(batch=1))
    z = model.f(model.init_state(u), u)
    low, high = model.unpack(z)
    bumped = model.pack([low, high + 1.0])
    changed = model.unpack(model.f(bumped, u))[0] - model.unpack(model.f(z, u))[0]
    assert changed.abs().max() > 1e-4


def test_double_precision_follows_inputs() -> None:
    model = create_model("convdeq", channels=8).double()
    logits = model(_inputs().double())
    assert logits.dtype == torch.float64
