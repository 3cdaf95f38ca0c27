"""I.i.d. Laplace noise and its L1 certificate (Teng et al., ICLR 2020; Yang et al., ICML 2020)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

from pydantic import Field
from torch import Tensor

from ..options import ComponentOptions
from ._base import AdditiveNoise, NoiseDraw


class LaplaceOptions(ComponentOptions):
    """Options of :class:`LaplaceNoise`."""

    scale: float = Field(
        gt=0, description="Scale lambda: density exp(-|e|/lambda) / (2 lambda) per pixel."
    )


class LaplaceNoise(AdditiveNoise):
    """``e_i ~ Laplace(0, lambda)`` i.i.d.; certified L1 radius ``lambda * log(1 / (2 (1 - p)))``.

    With ``p = p_lower > 1/2`` and the runner-up bounded by ``1 - p``, this is
    the second term of Teng et al.'s Theorem 1,
    ``-lambda * log(1 - p_A + p_B)``, and the Laplace row of Yang et al.'s
    Table 1.  It is tight: along one coordinate the worst set is a half-line
    ``{e <= t}`` with ``P = 1 - exp(-t / lambda) / 2 = p``, which a shift of
    ``t = lambda * log(1 / (2 (1 - p)))`` moves to probability 1/2.  The
    standard deviation per pixel is ``sqrt(2) * lambda``.
    """

    Options = LaplaceOptions
    registry_name = "laplace"
    norm = "l1"
    conformance_options: ClassVar[dict[str, Any]] = {"scale": 0.5}

    def _draw(self, draw: NoiseDraw) -> Tensor:
        # the difference of two Exp(1) variables is Laplace(0, 1)
        first = draw.exponential()
        return first.sub_(draw.exponential()).mul_(self.options.scale)

    def _radius(self, p: float) -> float:
        return float(-self.options.scale * math.log(2.0 * (1.0 - p)))
