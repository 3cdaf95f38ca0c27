"""``mdeq``: a multiscale DEQ in the spirit of MDEQ (Bai, Koltun and Kolter, 2020).

Parallel branches at successively halved resolutions, each updated by a
group-norm residual block driven by its own input injection, then fused:
every branch receives the sum of all branches resampled to its resolution.
The classifier reads the fixed point of every branch.

Solvers see one flat state: the branch states are packed into a single
``(B, D)`` tensor (and so is the injection ``u``), and unpacked inside
:meth:`MDEQ.f` and :meth:`MDEQ.readout`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from .base import (
    DEQModel,
    ImageModelOptions,
    PooledFeatures,
    ResidualBlock,
    conv3x3,
    downsampled,
    group_norm,
)

PRESETS: dict[str, dict[str, Any]] = {
    # Cheap enough to certify on a CPU: branches at 14x14 and 7x7 for MNIST.
    "small": {"widths": (16, 32), "stem_channels": 16, "stem_stride": 2, "head_channels": 32},
    # Closer to the published MDEQ-small: three branches from full resolution.
    "large": {"widths": (32, 64, 128), "stem_channels": 32, "stem_stride": 1, "head_channels": 128},
}


class MDEQOptions(ImageModelOptions):
    preset: Literal["small", "large"] = Field("small", description="defaults for the fields below")
    widths: tuple[int, ...] | None = Field(None, description="channels of each branch")
    stem_channels: int | None = Field(None, ge=1, description="channels after the stem")
    stem_stride: Literal[1, 2] | None = Field(None, description="stride of the stem")
    head_channels: int | None = Field(None, ge=1, description="channels of the classifier")
    head_pool: int = Field(4, ge=1, description="the head average-pools to head_pool x head_pool")
    groups: int = Field(4, ge=1, description="group-norm groups")

    @model_validator(mode="after")
    def _fill_from_preset(self) -> MDEQOptions:
        for key, value in PRESETS[self.preset].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if not self.widths or any(w < 1 for w in self.widths):
            raise ValueError("widths must be one or more positive channel counts")
        return self


def injection_layers(cin: int, cout: int, downsamples: int, groups: int) -> nn.Sequential:
    """3x3 convolutions (``downsamples`` of stride 2, or one of stride 1), then group norm."""
    strides = [2] * downsamples or [1]
    convs = [conv3x3(cin if k == 0 else cout, cout, stride=s) for k, s in enumerate(strides)]
    return nn.Sequential(*convs, group_norm(cout, groups))


class Resample(nn.Module):
    """Map branch ``src`` to the resolution and width of branch ``dst``."""

    def __init__(self, src: int, dst: int, widths: tuple[int, ...], sizes: list[int], groups: int):
        super().__init__()
        self.size = sizes[dst]
        layers: list[nn.Module] = []
        if src < dst:  # higher to lower resolution: stride-2 convolutions
            channels = widths[src]
            for step in range(dst - src):
                last = step == dst - src - 1
                out = widths[dst] if last else channels
                layers += [conv3x3(channels, out, stride=2), group_norm(out, groups)]
                if not last:
                    layers.append(nn.ReLU())
        else:  # lower to higher resolution: 1x1 convolution, then nearest upsampling
            layers += [nn.Conv2d(widths[src], widths[dst], 1, bias=False)]
            layers += [group_norm(widths[dst], groups)]
        self.layers = nn.Sequential(*layers)
        self.upsample = src > dst

    def forward(self, x: Tensor) -> Tensor:
        y = self.layers(x)
        return F.interpolate(y, size=self.size, mode="nearest") if self.upsample else y


class MDEQ(DEQModel):
    """Multiscale DEQ; the state is the flat concatenation of the branch states."""

    Options = MDEQOptions
    conformance_options: ClassVar[dict[str, Any]] = {
        "image_size": 8,
        "in_channels": 2,
        "num_classes": 3,
        "widths": (4, 8),
        "stem_channels": 4,
        "head_channels": 4,
        "head_pool": 2,
        "groups": 2,
    }
    """Tiny options the :mod:`deqcert.testing` suites build it with."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        o = self.options
        widths: tuple[int, ...] = o.widths
        first = downsampled(o.image_size, 1) if o.stem_stride == 2 else o.image_size
        self.sizes = [downsampled(first, i) for i in range(len(widths))]
        self.shapes = [(w, s, s) for w, s in zip(widths, self.sizes, strict=True)]
        self.split_sizes = [w * s * s for w, s, _ in self.shapes]

        self.stem = nn.Sequential(
            conv3x3(o.in_channels, o.stem_channels, stride=o.stem_stride),
            group_norm(o.stem_channels, o.groups),
            nn.ReLU(),
        )
        self.injections = nn.ModuleList(
            injection_layers(o.stem_channels, w, i, o.groups) for i, w in enumerate(widths)
        )
        self.blocks = nn.ModuleList(ResidualBlock(w, o.groups) for w in widths)
        self.fuse = nn.ModuleList(
            nn.ModuleList(
                nn.Identity() if src == dst else Resample(src, dst, widths, self.sizes, o.groups)
                for src in range(len(widths))
            )
            for dst in range(len(widths))
        )
        self.fuse_norms = nn.ModuleList(group_norm(w, o.groups) for w in widths)
        self.heads = nn.ModuleList(
            PooledFeatures(w, o.head_channels, o.head_pool, o.groups) for w in widths
        )
        features = len(widths) * o.head_channels * o.head_pool**2
        self.classifier = nn.Linear(features, o.num_classes)

    # -- packing -----------------------------------------------------------
    def pack(self, branches: list[Tensor]) -> Tensor:
        """Flatten and concatenate branch tensors into one ``(B, D)`` state."""
        return torch.cat([b.flatten(1) for b in branches], dim=1)

    def unpack(self, z: Tensor) -> list[Tensor]:
        """Split a ``(B, D)`` state into its ``(B, C_i, H_i, W_i)`` branches."""
        parts = torch.split(z, self.split_sizes, dim=1)
        return [p.reshape(z.shape[0], *shape) for p, shape in zip(parts, self.shapes, strict=True)]

    # -- the equilibrium model ---------------------------------------------
    def injection(self, x: Tensor) -> Tensor:
        stem = self.stem(x)
        return self.pack([inject(stem) for inject in self.injections])

    def f(self, z: Tensor, u: Tensor) -> Tensor:
        updated = [
            block(zi, ui)
            for block, zi, ui in zip(self.blocks, self.unpack(z), self.unpack(u), strict=True)
        ]
        fused = []
        for dst, (resamplers, norm) in enumerate(zip(self.fuse, self.fuse_norms, strict=True)):
            total = updated[dst]
            resample: nn.Module
            for src, resample in enumerate(resamplers):  # type: ignore[arg-type]
                if src != dst:
                    total = total + resample(updated[src])
            fused.append(F.relu(norm(total)))
        return self.pack(fused)

    def readout(self, z: Tensor) -> Tensor:
        features = [head(zi) for head, zi in zip(self.heads, self.unpack(z), strict=True)]
        return self.classifier(torch.cat(features, dim=1))  # type: ignore[no-any-return]
