"""Contractive models and sound Lipschitz bounds (deqcert.models.contractive, deqcert.lipschitz)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from deqcert import EquilibriumModel, OptionError, create_model, registry
from deqcert.checkpoint import checkpoint_metadata, load_checkpoint, save_checkpoint
from deqcert.lipschitz import (
    affine_margin_lipschitz,
    circular_conv_spectral_norm,
    dense_spectral_norm,
    zero_padded_conv_spectral_bound,
)
from deqcert.models.contractive import ContractiveConvDEQ, ContractiveMLPDEQ, ContractiveModel

MODELS = {"contractive-mlpdeq": ContractiveMLPDEQ, "contractive-convdeq": ContractiveConvDEQ}
SMALL = {
    "contractive-mlpdeq": {"image_size": 8, "hidden": 12},
    "contractive-convdeq": {"image_size": 8, "channels": 3, "head_pool": 2, "groups": 1},
}
BUNDLED = Path(__file__).resolve().parents[1] / "deqcert" / "checkpoints"


@pytest.fixture(autouse=True, scope="module")
def registered() -> Iterator[None]:
    """Register the models at run time unless their entry points already do."""
    added = [name for name in MODELS if name not in registry.models]
    for name in added:
        registry.models.register(name, MODELS[name])
    yield
    for name in added:
        registry.models.unregister(name)


def small(name: str, seed: int = 0, **options: object) -> Any:
    """A small untrained model (eval mode) with ``SMALL[name]`` options."""
    torch.manual_seed(seed)
    return create_model(name, **{**SMALL[name], **options}).eval()


def circular_conv_matrix(weight: torch.Tensor, size: int) -> torch.Tensor:
    """The dense matrix of the circular 3x3 convolution the conv model's ``f`` applies."""
    cin = weight.shape[1]
    dim = cin * size * size
    basis = torch.eye(dim, dtype=torch.float64).view(dim, cin, size, size)
    out = F.conv2d(F.pad(basis, (1, 1, 1, 1), mode="circular"), weight.to(torch.float64))
    return out.reshape(dim, -1).T


def power_iteration(matrix: torch.Tensor, steps: int = 3) -> float:
    """A few steps of power iteration: an *estimate* (from below) of ``||matrix||_2``."""
    v = torch.ones(matrix.shape[1], dtype=matrix.dtype)
    for _ in range(steps):
        v = matrix.T @ (matrix @ v)
        v = v / v.norm()
    return float((matrix @ v).norm())


# -- deqcert.lipschitz ---------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 5), (7, 3), (1, 9), (40, 40)])
def test_dense_spectral_norm_bounds_and_matches_svd(shape: tuple[int, int]) -> None:
    w = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    exact = float(torch.linalg.matrix_norm(w.double(), ord=2))
    bound = dense_spectral_norm(w)
    assert exact <= bound <= exact * (1 + 1e-8)
    assert power_iteration(w.double()) <= bound  # the estimate never exceeds the bound


@pytest.mark.parametrize(
    ("cout", "cin", "kernel", "size", "padding"),
    [(3, 2, 3, 5, 1), (4, 4, 3, 6, 1), (2, 3, 5, 7, 2), (3, 3, 1, 4, 0), (2, 2, 3, 3, 1)],
)
def test_conv_norms_against_the_dense_operator(
    cout: int, cin: int, kernel: int, size: int, padding: int
) -> None:
    gen = torch.Generator().manual_seed(cout * 100 + size)
    weight = torch.randn((cout, cin, kernel, kernel), generator=gen, dtype=torch.float64)
    dim = cin * size * size
    basis = torch.eye(dim, dtype=torch.float64).view(dim, cin, size, size)
    padded = F.pad(basis, (padding,) * 4, mode="circular") if padding else basis
    circular = F.conv2d(padded, weight).reshape(dim, -1).T
    zero = F.conv2d(basis, weight, padding=padding).reshape(dim, -1).T
    exact_circular = float(torch.linalg.matrix_norm(circular, ord=2))
    exact_zero = float(torch.linalg.matrix_norm(zero, ord=2))
    # circular: exact (to the documented 1e-9 inflation plus float64 noise)
    fft = circular_conv_spectral_norm(weight, size)
    assert exact_circular <= fft <= exact_circular * (1 + 1e-8)
    # zero padding: an upper bound
    assert exact_zero <= zero_padded_conv_spectral_bound(weight, size, padding)


def test_conv_norm_rejects_a_kernel_larger_than_the_torus() -> None:
    with pytest.raises(ValueError, match="larger than"):
        circular_conv_spectral_norm(torch.ones(1, 1, 5, 5), 3)


def test_affine_margin_lipschitz_is_exact() -> None:
    gen = torch.Generator().manual_seed(3)
    g = torch.randn((4, 6), generator=gen, dtype=torch.float64)
    r = affine_margin_lipschitz(g)
    assert r.shape == (4, 4) and torch.all(r.diagonal() == 0)
    for a in range(4):
        for b in range(4):
            diff = g[a] - g[b]
            # attained in the direction of the difference, never exceeded elsewhere
            assert r[a, b] >= diff.norm() and r[a, b] <= diff.norm() * (1 + 1e-8)
            step = torch.randn(6, generator=gen, dtype=torch.float64)
            assert abs(float(diff @ step)) <= float(r[a, b] * step.norm())


# -- the models ------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_protocols_and_shapes(name: str) -> None:
    model = small(name)
    assert isinstance(model, EquilibriumModel) and isinstance(model, ContractiveModel)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    u = model.inject(x)
    z = model.init_state(u)
    assert model.f(z, u).shape == z.shape
    assert model.readout(z).shape == (3, 10)
    bound = model.contraction_bound()
    assert bound.norm == "l2" and 0 < bound.lipschitz < 1


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("gamma", [0.3, 0.9])
def test_contraction_bound_holds_on_random_pairs(name: str, gamma: float) -> None:
    model = small(name, gamma=gamma).double()
    lip = model.contraction_bound().lipschitz
    assert lip <= gamma * (1 + 1e-8)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(64, 1, 8, 8, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        u = model.inject(x)
        z1 = 3 * torch.randn(u.shape, generator=gen, dtype=torch.float64)
        scales = 10.0 ** torch.randint(-3, 2, (64,) + (1,) * (u.dim() - 1), generator=gen)
        z2 = z1 + scales * torch.randn(u.shape, generator=gen, dtype=torch.float64)
        gap = (model.f(z1, u) - model.f(z2, u)).flatten(1).norm(dim=1)
    assert torch.all(gap <= lip * (z1 - z2).flatten(1).norm(dim=1) * (1 + 1e-9))


def test_conv_model_bound_is_the_exact_operator_norm() -> None:
    model = small("contractive-convdeq", gamma=0.8).double()
    with torch.no_grad():
        weight = model.recurrent()
    dense = circular_conv_matrix(weight, model.state_size)
    exact = float(torch.linalg.matrix_norm(dense, ord=2))
    lip = model.contraction_bound().lipschitz
    assert exact <= lip <= exact * (1 + 1e-8)
    # the operator is the one f applies: with a large injection relu is the identity
    gen = torch.Generator().manual_seed(0)
    z = torch.randn((2, 3, model.state_size, model.state_size), generator=gen).double()
    u = torch.full_like(z, 1e3)
    with torch.no_grad():
        linear = model.f(z, u) - u
    assert torch.allclose(linear.flatten(1), z.flatten(1) @ dense.T)


@pytest.mark.parametrize("name", list(MODELS))
def test_readout_lipschitz_bounds_logit_differences(name: str) -> None:
    model = small(name).double()
    r = model.readout_lipschitz()
    assert r.dtype == torch.float64 and r.shape == (10, 10)
    gen = torch.Generator().manual_seed(2)
    shape = model.init_state(model.inject(torch.zeros(1, 1, 8, 8, dtype=torch.float64))).shape
    with torch.no_grad():
        z1 = torch.randn((32, *shape[1:]), generator=gen, dtype=torch.float64)
        z2 = z1 + 0.1 * torch.randn((32, *shape[1:]), generator=gen, dtype=torch.float64)
        l1, l2 = model.readout(z1), model.readout(z2)
    dist = (z1 - z2).flatten(1).norm(dim=1)
    change = (l1.unsqueeze(2) - l1.unsqueeze(1)) - (l2.unsqueeze(2) - l2.unsqueeze(1))
    assert torch.all(change.abs() <= r * dist.view(-1, 1, 1) * (1 + 1e-9) + 1e-12)


@pytest.mark.parametrize("name", list(MODELS))
def test_training_keeps_the_weight_contractive(name: str) -> None:
    model = small(name, gamma=0.5).train()
    opt = torch.optim.SGD(model.parameters(), lr=5.0)  # large steps: V grows a lot
    gen = torch.Generator().manual_seed(0)
    before = model.contraction_bound().lipschitz
    for _ in range(3):
        x = torch.rand(8, 1, 8, 8, generator=gen)
        u = model.inject(x)
        z = model.f(model.f(model.init_state(u), u), u)
        loss = F.cross_entropy(model.readout(z), torch.arange(8) % 10)
        opt.zero_grad()
        loss.backward()
        assert model.recurrent.raw.grad is not None  # trained through the normalisation
        opt.step()
    after = model.contraction_bound().lipschitz
    assert after <= 0.5 * (1 + 1e-5) and after != before


def test_cached_weight_follows_in_place_updates() -> None:
    model = small("contractive-mlpdeq")
    with torch.no_grad():
        first = model.recurrent().clone()
        assert model.recurrent() is model.recurrent()  # cached between calls of f
        model.recurrent.raw.mul_(0.01)  # now below norm 1: W = gamma * V
        second = model.recurrent()
    assert not torch.equal(first, second)
    assert torch.allclose(second, model.recurrent.gamma * model.recurrent.raw)


@pytest.mark.parametrize("gamma", [0.0, 1.0, 1.5])
def test_gamma_must_be_below_one(gamma: float) -> None:
    with pytest.raises(OptionError, match="gamma"):
        create_model("contractive-mlpdeq", gamma=gamma)


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = small("contractive-convdeq")
    path = save_checkpoint(model, tmp_path / "c.safetensors", {"sigma": 0.25})
    loaded = load_checkpoint(path)
    assert checkpoint_metadata(path)["model"] == "contractive-convdeq"
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded.inject(x), model.inject(x))
    assert loaded.contraction_bound() == model.contraction_bound()


@pytest.mark.parametrize("path", sorted(BUNDLED.glob("contractive-*.safetensors")), ids=str)
def test_bundled_checkpoint(path: Path) -> None:
    assert path.stat().st_size < 500_000
    meta = checkpoint_metadata(path)
    model = load_checkpoint(path)
    assert isinstance(model, ContractiveModel)
    assert model.contraction_bound().lipschitz < 1
    assert meta["sigma"] == 0.25 and meta["dataset"]["name"] == "mnist-sample"
    assert meta["metrics"]["clean_accuracy"] > 0.9
    assert not math.isnan(float(model.readout_lipschitz().max()))


@pytest.mark.parametrize(("image_size", "stride"), [(8, 2), (9, 1), (10, 2)])
def test_float64_fft_convolution_equals_the_direct_one(image_size: int, stride: int) -> None:
    model = small(
        "contractive-convdeq", image_size=image_size, stem_stride=stride, head_pool=1
    ).double()
    size = model.state_size
    z = torch.randn((4, 3, size, size), generator=torch.Generator().manual_seed(0)).double()
    with torch.no_grad():
        direct = F.conv2d(F.pad(z, (1, 1, 1, 1), mode="circular"), model.recurrent())
        assert torch.allclose(model.circular_conv(z), direct, rtol=0, atol=1e-12)
