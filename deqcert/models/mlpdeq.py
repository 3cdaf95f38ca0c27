"""``mlpdeq``: a fully connected DEQ, ``f(z, u) = tanh(W z + u)``.

Small and fast: meant for tests, tabular-sized images and quick experiments.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn

from .base import DEQModel, ImageModelOptions


class MLPDEQOptions(ImageModelOptions):
    hidden: int = Field(64, ge=1, description="width of the state")


class MLPDEQ(DEQModel):
    """Fully connected DEQ with state ``(B, hidden)``."""

    Options = MLPDEQOptions
    conformance_options: ClassVar[dict[str, Any]] = {
        "image_size": 8,
        "in_channels": 2,
        "num_classes": 3,
        "hidden": 8,
    }
    """Tiny options the :mod:`deqcert.testing` suites build it with."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        o = self.options
        features = o.in_channels * o.image_size * o.image_size
        self.input_layer = nn.Linear(features, o.hidden)
        self.recurrent = nn.Linear(o.hidden, o.hidden, bias=False)
        self.output_layer = nn.Linear(o.hidden, o.num_classes)
        with torch.no_grad():  # start well inside the contractive regime
            self.recurrent.weight.mul_(0.5)

    def injection(self, x: Tensor) -> Tensor:
        return self.input_layer(x.flatten(1))  # type: ignore[no-any-return]

    def f(self, z: Tensor, u: Tensor) -> Tensor:
        return torch.tanh(self.recurrent(z) + u)

    def readout(self, z: Tensor) -> Tensor:
        return self.output_layer(z)  # type: ignore[no-any-return]
