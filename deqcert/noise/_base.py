"""Shared base of the built-in additive noise samplers.

A sampler draws i.i.d. noise in pixel space and turns a lower confidence
bound ``p_lower`` on the smoothed classifier's top-class probability into the
radius (in :attr:`AdditiveNoise.norm`) within which the prediction is
certified.  For ``p_lower <= 1/2`` nothing is certified and the radius is 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..options import Configurable


@dataclass(frozen=True)
class NoiseDraw:
    """One request for noise: its shape, the generator to draw with, the device and dtype.

    :meth:`AdditiveNoise.sample` builds it; a sampler's ``_draw`` turns the
    standard draws below (each a fresh tensor of :attr:`shape`) into its noise.
    """

    shape: tuple[int, ...]
    generator: torch.Generator
    device: torch.device
    dtype: torch.dtype

    def randn(self) -> Tensor:
        """Standard normal draws."""
        return torch.randn(self.shape, **self._factory())

    def rand(self) -> Tensor:
        """Uniform draws on ``[0, 1)``."""
        return torch.rand(self.shape, **self._factory())

    def exponential(self) -> Tensor:
        """``Exp(1)`` draws."""
        out = torch.empty(self.shape, device=self.device, dtype=self.dtype)
        return out.exponential_(generator=self.generator)

    def _factory(self) -> dict[str, Any]:
        return {"generator": self.generator, "device": self.device, "dtype": self.dtype}


class AdditiveNoise(Configurable):
    """Base class: validated options, :meth:`sample`, :meth:`radius`, :meth:`describe`.

    Subclasses set :attr:`norm` and implement ``_draw(draw)`` (noise for the
    :class:`NoiseDraw` request ``draw``) and ``_radius(p)`` (the radius for
    ``1/2 < p < 1``).
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
        return self._draw(
            NoiseDraw(tuple(shape), generator, dev, dtype or torch.get_default_dtype())
        )

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

    def _draw(self, draw: NoiseDraw) -> Tensor:
        raise NotImplementedError

    def _radius(self, p: float) -> float:
        raise NotImplementedError
