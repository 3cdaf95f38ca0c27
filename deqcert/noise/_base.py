"""Shared base of the built-in additive noise samplers.

A sampler draws i.i.d. noise in pixel space and turns a lower confidence
bound ``p_lower`` on the smoothed classifier's top-class probability into the
radius (in :attr:`AdditiveNoise.norm`) within which the prediction is
certified.  For ``p_lower <= 1/2`` nothing is certified and the radius is 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..options import Configurable


class AdditiveNoise(Configurable):
    """Base class: validated options, :meth:`sample`, :meth:`radius`, :meth:`describe`.

    Subclasses set :attr:`norm` and implement :meth:`_draw` (noise of the
    given shape) and :meth:`_radius` (the radius for ``1/2 < p < 1``).
    """

    norm: str = ""
    options: Any

    def sample(
        self,
        shape: Sequence[int],
        *,
        generator: torch.Generator,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Noise of ``shape`` drawn with ``generator``, on its device unless ``device`` is given."""
        dev = torch.device(device) if device is not None else generator.device
        return self._draw(tuple(shape), generator, dev, dtype or torch.get_default_dtype())

    def radius(self, p_lower: float) -> float:
        """Certified radius for a lower bound ``p_lower`` on ``P(h(x + e) = A)``.

        0 when ``p_lower <= 1/2`` (abstain), ``inf`` when ``p_lower >= 1``.
        """
        p = float(p_lower)
        if math.isnan(p) or p <= 0.5:
            return 0.0
        if p >= 1.0:
            return math.inf
        return float(self._radius(p))

    def describe(self) -> dict[str, Any]:
        """Name, parameters and the norm the radius is measured in."""
        return {**super().describe(), "norm": self.norm}

    def _draw(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator,
        device: torch.device,
        dtype: torch.dtype,
    ) -> Tensor:
        raise NotImplementedError

    def _radius(self, p: float) -> float:
        raise NotImplementedError
