"""``convdeq``: a single-scale convolutional DEQ.

A strided stem maps the image to a ``channels x s x s`` injection ``u``; the
state ``z`` has the same shape and ``f`` is one group-norm residual block.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from .base import DEQModel, ImageModelOptions, PooledFeatures, ResidualBlock, conv3x3, group_norm


class ConvDEQOptions(ImageModelOptions):
    channels: int = Field(24, ge=1, description="channels of the state")
    hidden: int | None = Field(
        None, ge=1, description="inner channels of the block (default: channels)"
    )
    stem_stride: Literal[1, 2] = Field(2, description="2 halves the resolution of the state")
    head_channels: int = Field(32, ge=1, description="channels of the classifier head")
    head_pool: int = Field(4, ge=1, description="the head average-pools to head_pool x head_pool")
    groups: int = Field(4, ge=1, description="group-norm groups")


class ConvDEQ(DEQModel):
    """Single-scale convolutional DEQ with state ``(B, channels, s, s)``."""

    Options = ConvDEQOptions
    conformance_options: ClassVar[dict[str, Any]] = {
        "image_size": 8,
        "in_channels": 2,
        "num_classes": 3,
        "channels": 4,
        "head_channels": 4,
        "head_pool": 2,
        "groups": 2,
    }
    """Tiny options the :mod:`deqcert.testing` suites build it with."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        o = self.options
        self.stem = conv3x3(o.in_channels, o.channels, stride=o.stem_stride)
        self.stem_norm = group_norm(o.channels, o.groups)
        self.inject_conv = conv3x3(o.channels, o.channels)
        self.inject_norm = group_norm(o.channels, o.groups)
        self.block = ResidualBlock(o.channels, o.groups, o.hidden)
        self.head = PooledFeatures(o.channels, o.head_channels, o.head_pool, o.groups)
        self.classifier = nn.Linear(self.head.size, o.num_classes)

    def injection(self, x: Tensor) -> Tensor:
        return self.inject_norm(self.inject_conv(F.relu(self.stem_norm(self.stem(x)))))

    def f(self, z: Tensor, u: Tensor) -> Tensor:
        return self.block(z, u)  # type: ignore[no-any-return]

    def readout(self, z: Tensor) -> Tensor:
        return self.classifier(self.head(z))  # type: ignore[no-any-return]
