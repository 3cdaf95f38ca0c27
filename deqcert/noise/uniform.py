"""I.i.d. uniform noise on a cube and its L1 certificate (Yang et al., ICML 2020)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field
from torch import Tensor

from ..options import ComponentOptions
from ._base import AdditiveNoise, NoiseDraw


class UniformOptions(ComponentOptions):
    """Options of :class:`UniformNoise`."""

    half_width: float = Field(
        gt=0, description="lambda: every pixel's noise is uniform on [-lambda, lambda]."
    )


class UniformNoise(AdditiveNoise):
    """``e ~ U([-lambda, lambda]^d)``; certified L1 radius ``2 * lambda * (p - 1/2)``.

    Yang et al. (2020), Table 1 (uniform noise, L1 adversary), parametrised by
    the half-width ``lambda`` (per-pixel standard deviation
    ``lambda / sqrt(3)``).  Why: a shift ``delta`` moves at most
    ``||delta||_1 / (2 lambda)`` of probability mass out of the cube (exactly
    that much along one axis), so ``p - ||delta||_1 / (2 lambda) > 1/2`` keeps
    the prediction.
    """

    Options = UniformOptions
    registry_name = "uniform"
    norm = "l1"
    conformance_options: ClassVar[dict[str, Any]] = {"half_width": 0.5}

    def _draw(self, draw: NoiseDraw) -> Tensor:
        return draw.rand().mul_(2.0).sub_(1.0).mul_(self.options.half_width)

    def _radius(self, p: float) -> float:
        return float(2.0 * self.options.half_width * (p - 0.5))
