"""Isotropic Gaussian noise and its L2 certificate (Cohen, Rosenfeld and Kolter, ICML 2019)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field
from scipy.stats import norm as normal
from torch import Tensor

from ..options import ComponentOptions
from ._base import AdditiveNoise, NoiseDraw


class GaussianOptions(ComponentOptions):
    """Options of :class:`GaussianNoise`."""

    sigma: float = Field(gt=0, description="Standard deviation of every pixel's noise.")


class GaussianNoise(AdditiveNoise):
    """``e ~ N(0, sigma^2 I)``; certified L2 radius ``sigma * Phi^-1(p_lower)``.

    Cohen et al. (2019), Theorem 1 with ``p_B = 1 - p_A``: if
    ``P(h(x + e) = A) >= p_lower > 1/2`` the smoothed classifier predicts ``A``
    on the L2 ball of radius ``sigma * Phi^-1(p_lower)`` around ``x``.
    """

    Options = GaussianOptions
    registry_name = "gaussian"
    norm = "l2"
    conformance_options: ClassVar[dict[str, Any]] = {"sigma": 0.5}

    def _draw(self, draw: NoiseDraw) -> Tensor:
        return draw.randn().mul_(self.options.sigma)

    def _radius(self, p: float) -> float:
        return float(self.options.sigma * normal.ppf(p))
