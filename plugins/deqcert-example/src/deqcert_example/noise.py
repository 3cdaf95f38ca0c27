"""Gaussian noise with an L-infinity certificate derived from the L2 one.

Cohen et al. (2019) certify the L2 ball of radius ``R = sigma * Phi^-1(p_lower)``
under ``N(0, sigma^2 I)`` noise.  In ``d`` dimensions every vector satisfies
``||delta||_2 <= sqrt(d) * ||delta||_inf``, so the L-infinity ball of radius
``R / sqrt(d)`` lies inside that L2 ball and is certified as well.  The
radius depends on the input dimension, so ``dim`` is a required option, and
:meth:`GaussianLinfNoise.sample` refuses shapes whose trailing dimensions do
not multiply to ``dim`` (a wrong ``dim`` could otherwise over-state radii).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from pydantic import Field
from scipy.stats import norm as normal
from torch import Tensor

from deqcert.errors import OptionError
from deqcert.noise import AdditiveNoise, NoiseDraw
from deqcert.options import ComponentOptions


class GaussianLinfOptions(ComponentOptions):
    """Options of :class:`GaussianLinfNoise`."""

    sigma: float = Field(gt=0, description="Standard deviation of every pixel's noise.")
    dim: int = Field(ge=1, description="Input dimension d = C * H * W (784 for MNIST).")


class GaussianLinfNoise(AdditiveNoise):
    """``e ~ N(0, sigma^2 I)``; certified L-inf radius ``sigma * Phi^-1(p_lower) / sqrt(dim)``."""

    Options = GaussianLinfOptions
    norm = "linf"
    # what deqcert.testing builds it with: its inputs have C * H * W = 36
    conformance_options: ClassVar[dict[str, Any]] = {"sigma": 0.5, "dim": 36}

    def _draw(self, draw: NoiseDraw) -> Tensor:
        self._check_shape(draw.shape)
        return draw.randn().mul_(self.options.sigma)

    def _radius(self, p: float) -> float:
        return float(self.options.sigma * normal.ppf(p) / math.sqrt(self.options.dim))

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        """Accept ``(..., C, H, W)`` with ``C * H * W == dim`` (any number of leading dims)."""
        suffix = 1
        for size in reversed(shape):
            suffix *= size
            if suffix == self.options.dim:
                return
        raise OptionError(
            f"gaussian-linf: option 'dim' is {self.options.dim} but the noise shape is "
            f"{list(shape)}; set dim to the input's C * H * W"
        )
