"""Pieces shared by the built-in equilibrium models.

:class:`DEQModel` holds what every model repeats: validated options, input
normalisation (pixels in ``[0, 1]`` in, normalised inside :meth:`inject`), the
default reference solver and ``forward``, which solves for the fixed point
and reads it out.  :class:`ResidualBlock` is the group-norm residual cell used
by the convolutional models.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from ..errors import DataError
from ..options import ComponentOptions, validate_options
from ..protocols import FixedPointSolver, SolverResult

DEFAULT_SOLVER: dict[str, Any] = {
    "name": "anderson",
    "max_iter": 30,
    "tol": 1e-3,
    "stop_mode": "rel",
    "m": 5,
}
"""The reference solve: Anderson, relative tolerance 1e-3, at most 30 steps."""


class ImageModelOptions(ComponentOptions):
    """Input geometry, class count and pixel normalisation, common to all models."""

    in_channels: int = Field(1, ge=1, description="channels of the input image")
    image_size: int = Field(28, ge=4, description="height and width of the input image")
    num_classes: int = Field(10, ge=2, description="number of output classes")
    mean: tuple[float, ...] = Field((0.1307,), description="per-channel pixel mean (or one)")
    std: tuple[float, ...] = Field((0.3081,), description="per-channel pixel std (or one)")

    @model_validator(mode="after")
    def _check_normalisation(self) -> ImageModelOptions:
        for key in ("mean", "std"):
            values = getattr(self, key)
            if len(values) not in (1, self.in_channels):
                raise ValueError(
                    f"{key} needs 1 or in_channels={self.in_channels} values, got {len(values)}"
                )
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be positive")
        return self


class DEQModel(nn.Module):
    """Base of the built-in DEQs: ``logits = readout(z*)``, ``z* = f(z*, inject(x))``.

    Subclasses define ``Options`` (a subclass of :class:`ImageModelOptions`),
    :meth:`injection` (normalised pixels to ``u``), :meth:`f`,
    :meth:`readout` and :meth:`init_state` when zeros of ``u``'s shape are not
    the right state.
    """

    Options: ClassVar[type[ImageModelOptions]] = ImageModelOptions
    registry_name: ClassVar[str] = ""

    def __init__(self, **options: Any) -> None:
        nn.Module.__init__(self)
        self.options: Any = validate_options(
            self.Options, options, self.registry_name or type(self).__name__
        )
        opts = self.options
        self.num_classes = int(opts.num_classes)
        self.input_shape = (opts.in_channels, opts.image_size, opts.image_size)
        shape = (1, -1, 1, 1)
        self.pixel_mean: Tensor
        self.pixel_std: Tensor
        self.register_buffer("pixel_mean", torch.tensor(opts.mean).view(shape), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(opts.std).view(shape), persistent=False)

    # -- the protocol ----------------------------------------------------
    def inject(self, x: Tensor) -> Tensor:
        """Input injection ``u`` for pixels ``x`` of shape ``(B, C, H, W)`` in ``[0, 1]``."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise DataError(
                f"{self.registry_name or type(self).__name__}: expected inputs of shape "
                f"(B, {', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}"
            )
        return self.injection((x - self.pixel_mean) / self.pixel_std)

    def injection(self, x: Tensor) -> Tensor:
        """Map normalised pixels to the injection ``u`` (one tensor per batch)."""
        raise NotImplementedError

    def init_state(self, u: Tensor) -> Tensor:
        """The starting state ``z0``: zeros shaped like the state."""
        return torch.zeros_like(u)

    def f(self, z: Tensor, u: Tensor) -> Tensor:
        """The equilibrium map ``z -> f(z, u)``."""
        raise NotImplementedError

    def readout(self, z: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` from the state ``z``."""
        raise NotImplementedError

    # -- conveniences ----------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """The model's registry name and options, JSON-friendly."""
        name = self.registry_name or type(self).__name__
        return {"name": name, **self.options.model_dump(mode="json")}

    @staticmethod
    def default_solver() -> FixedPointSolver:
        """A fresh reference solver (see :data:`DEFAULT_SOLVER`)."""
        from ..registry import create_solver

        spec = dict(DEFAULT_SOLVER)
        return create_solver(spec.pop("name"), **spec)  # type: ignore[no-any-return]

    def solve(
        self, x: Tensor, solver: FixedPointSolver | None = None, z0: Tensor | None = None
    ) -> tuple[Tensor, SolverResult]:
        """Logits and the solver's result for pixels ``x``.

        The fixed-point search runs without autograd; to train through the
        equilibrium use :mod:`deqcert.models.grad` (as :mod:`deqcert.train` does).
        """
        return solve_model(self, x, solver if solver is not None else self.default_solver(), z0)

    def forward(
        self, x: Tensor, solver: FixedPointSolver | None = None, z0: Tensor | None = None
    ) -> Tensor:
        """Logits of the fixed point found by ``solver`` (default: the reference solve)."""
        return self.solve(x, solver, z0)[0]


def solve_model(
    model: Any, x: Tensor, solver: FixedPointSolver, z0: Tensor | None = None
) -> tuple[Tensor, SolverResult]:
    """Logits and the solver's result for pixels ``x``: ``readout`` of the fixed point of
    ``f(., inject(x))`` that ``solver`` finds from ``z0`` (default ``init_state(u)``), no autograd.
    """
    u = model.inject(x)
    start = model.init_state(u) if z0 is None else z0
    with torch.no_grad():
        u_fixed = u.detach()
        result = solver.solve(lambda z: model.f(z, u_fixed), start.detach())
    return model.readout(result.z), result


def group_norm(channels: int, groups: int, affine: bool = True) -> nn.GroupNorm:
    """Group norm with the largest group count that divides ``channels`` and is <= ``groups``."""
    count = math.gcd(channels, groups) or 1
    return nn.GroupNorm(count, channels, affine=affine)


def conv3x3(cin: int, cout: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias)


def downsampled(size: int, times: int) -> int:
    """Spatial size after ``times`` stride-2 3x3 convolutions with padding 1."""
    for _ in range(times):
        size = (size - 1) // 2 + 1
    return size


class ResidualBlock(nn.Module):
    """``relu(gn(z + gn(conv(relu(gn(conv(z)))) + u)))``: the MDEQ residual cell
    (``norm_last``: ``gn(relu(...))``, the order of the published MDEQ)."""

    def __init__(
        self, channels: int, groups: int, hidden: int | None = None, norm_last: bool = False
    ) -> None:
        super().__init__()
        self.norm_last = norm_last  # gn(relu(.)) at the end, as the published MDEQ
        hidden = hidden or channels
        self.conv1 = conv3x3(channels, hidden)
        self.norm1 = group_norm(hidden, groups)
        self.conv2 = conv3x3(hidden, channels)
        self.norm2 = group_norm(channels, groups)
        self.norm3 = group_norm(channels, groups)

    def forward(self, z: Tensor, u: Tensor, mask: Tensor | None = None) -> Tensor:
        """One update; ``mask`` (shaped like ``z``) scales the second convolution's output
        (variational dropout, drawn by the model once per batch)."""
        y = F.relu(self.norm1(self.conv1(z)))
        y = self.conv2(y)
        if mask is not None:
            y = y * mask
        y = self.norm2(y + u)
        if self.norm_last:
            return self.norm3(F.relu(y + z))  # type: ignore[no-any-return]
        return F.relu(self.norm3(y + z))


class PooledFeatures(nn.Module):
    """Head features of a feature map: strided conv, group norm, ReLU, average pool to
    ``pool x pool``, flattened to ``channels * pool**2`` values."""

    def __init__(self, cin: int, channels: int, pool: int, groups: int) -> None:
        super().__init__()
        self.conv = conv3x3(cin, channels, stride=2)
        self.norm = group_norm(channels, groups)
        self.pool = pool
        self.size = channels * pool * pool

    def forward(self, z: Tensor) -> Tensor:
        y = F.relu(self.norm(self.conv(z)))
        return F.adaptive_avg_pool2d(y, self.pool).flatten(1)
