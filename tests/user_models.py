"""Users' own DEQs, written as a researcher would (no deqcert base class), and their factories.

``deqcert certify --model tests/user_models.py:build`` uses :func:`build`;
the tests also use the locuslab-style multi-resolution :class:`SmallMDEQ`
(a list state) and, when TorchDEQ is installed, :class:`TorchDEQNet`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import deqcert


class TinyDEQ(nn.Module):
    """A plain PyTorch DEQ: ``z = tanh(W z + U x)``, logits ``V z``; its own forward iterates."""

    def __init__(self, hidden: int = 24) -> None:
        super().__init__()
        self.enc = nn.Linear(784, hidden)
        self.cell = nn.Linear(hidden, hidden, bias=False)
        self.head = nn.Linear(hidden, 10)
        with torch.no_grad():  # a contraction, so the plain iteration converges
            self.cell.weight.mul_(0.5 / torch.linalg.matrix_norm(self.cell.weight, ord=2))

    def forward(self, x: Tensor, iters: int = 200) -> Tensor:
        u = self.enc(((x - 0.1307) / 0.3081).flatten(1))
        z = torch.zeros_like(u)
        for _ in range(iters):
            z = torch.tanh(self.cell(z) + u)
        return self.head(z)


def build() -> deqcert.EquilibriumModel:
    """The adapter a user writes for :class:`TinyDEQ` (the CLI's ``--model ...:build``)."""
    torch.manual_seed(0)
    net = TinyDEQ()
    return deqcert.adapt(
        net,
        inject=lambda x: net.enc(((x - 0.1307) / 0.3081).flatten(1)),
        f=lambda z, u: torch.tanh(net.cell(z) + u),
        readout=net.head,
        num_classes=10,
        input_shape=(1, 28, 28),
    )


class Bare(nn.Module):
    """A module with a readout and a class count but no ``inject`` and no ``f``."""

    num_classes = 10

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(4, 10)

    def init_state(self, u: Tensor) -> Tensor:
        return torch.zeros_like(u)

    def readout(self, z: Tensor) -> Tensor:
        return self.head(z)

    def forward(self, x: Tensor, solver: Any = None, z0: Any = None) -> Tensor:
        return self.head(x.flatten(1)[:, :4])


def bare() -> Bare:
    return Bare()


class Branch(nn.Module):
    """The MDEQ residual block of one resolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm = nn.GroupNorm(2, channels)

    def forward(self, z: Tensor, injection: Tensor | None = None) -> Tensor:
        y = self.conv2(F.relu(self.conv1(z)))
        if injection is not None:
            y = y + injection
        return F.relu(self.norm(y + z))


class SmallMDEQ(nn.Module):
    """A locuslab-style MDEQ: two resolutions (8x14x14, 16x7x7), fused; the state is a list."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, stride=2, padding=1)
        self.branches = nn.ModuleList([Branch(8), Branch(16)])
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
        self.up = nn.Conv2d(16, 8, 1, bias=False)
        self.head = nn.Linear(8 + 16, 10)

    def injection(self, x: Tensor) -> Tensor:
        return self.stem((x - 0.1307) / 0.3081)

    def init_states(self, u: Tensor) -> list[Tensor]:
        b, _, h, w = u.shape
        return [torch.zeros(b, 8, h, w), torch.zeros(b, 16, (h + 1) // 2, (w + 1) // 2)]

    def deq_func(self, z: list[Tensor], u: Tensor) -> list[Tensor]:
        high = self.branches[0](z[0], u)
        low = self.branches[1](z[1])
        fused_high = high + F.interpolate(self.up(low), size=high.shape[-2:], mode="nearest")
        fused_low = low + self.down(high)
        return [0.5 * fused_high, 0.5 * fused_low]

    def classify(self, z: list[Tensor]) -> Tensor:
        return self.head(torch.cat([zi.mean(dim=(2, 3)) for zi in z], dim=1))

    def forward(self, x: Tensor, iters: int = 60) -> Tensor:
        u = self.injection(x)
        z = self.init_states(u)
        for _ in range(iters):
            z = self.deq_func(z, u)
        return self.classify(z)


def build_mdeq() -> deqcert.EquilibriumModel:
    torch.manual_seed(0)
    net = SmallMDEQ()
    return deqcert.adapt(
        net,
        inject="injection",
        f="deq_func",
        readout="classify",
        init_state="init_states",
        num_classes=10,
        input_shape=(1, 28, 28),
    )


class TorchDEQNet(nn.Module):
    """A TorchDEQ model as its docs build one: get_deq, weight norm, reset_norm in forward."""

    def __init__(self, **deq_settings: Any) -> None:
        super().__init__()
        from torchdeq import get_deq
        from torchdeq.norm import apply_norm

        self.encoder = nn.Linear(784, 32)
        self.layer = nn.Linear(32, 32, bias=False)
        self.head = nn.Linear(32, 10)
        settings = {"f_solver": "anderson", "f_max_iter": 25, "f_tol": 1e-4, **deq_settings}
        self.deq = get_deq(**settings)
        apply_norm(self.layer, "weight_norm")

    def inject(self, x: Tensor) -> Tensor:
        return self.encoder(((x - 0.1307) / 0.3081).flatten(1))

    def func(self, z: Tensor, u: Tensor) -> Tensor:
        return torch.tanh(0.7 * self.layer(z) + u)

    def forward(self, x: Tensor) -> Tensor:
        from torchdeq.norm import reset_norm

        reset_norm(self.layer)
        u = self.inject(x)
        z_out, _ = self.deq(lambda z: self.func(z, u), torch.zeros_like(u))
        return self.head(z_out[-1])


def build_torchdeq() -> deqcert.EquilibriumModel:
    from deqcert.adapters import torchdeq

    torch.manual_seed(0)
    net = TorchDEQNet()
    return torchdeq.adapt(
        net, inject="inject", f="func", readout="head", num_classes=10, input_shape=(1, 28, 28)
    )


def build_rgb() -> deqcert.EquilibriumModel:
    """A model for 3x32x32 inputs (the wrong shape for MNIST)."""
    net = nn.Linear(3 * 32 * 32, 10)
    return deqcert.adapt(
        net,
        inject=lambda x: net(x.flatten(1)),
        f=lambda z, u: 0.5 * z + u,
        readout=lambda z: z,
        num_classes=10,
        input_shape=(3, 32, 32),
    )
