"""``mdeq``: a multiscale DEQ in the spirit of MDEQ (Bai, Koltun and Kolter, 2020).

Parallel branches at successively halved resolutions, each updated by a
group-norm residual block driven by its own input injection, then fused:
every branch receives the sum of all branches resampled to its resolution.
The classifier reads the fixed point of every branch.

Presets ``small`` and ``large`` are sized for MNIST on a CPU.  ``cifar10-small``
and ``cifar10-large`` follow the published MDEQ-Small and MDEQ-Large CIFAR-10
configurations (``cls_mdeq_SMALL.yaml`` of the SRS code and
``cls_mdeq_LARGE_reg.yaml`` of the MDEQ code): 3 / 4 branches of 8-16-32 /
32-64-128-256 channels at 32x32 and below, residual blocks 5x wide inside,
8 group-norm groups, weight normalisation of every convolution of ``f``,
variational dropout (0.2 / 0.22, one mask per batch, training only), the
input injected into the highest-resolution branch only, blocks that end with
ReLU then group norm, fusion followed by ReLU, a 1x1 convolution and a group
norm with 4 groups and no affine parameters, and the multiscale bottleneck
head (head widths 7-14-28 / 14-28-56-112, final 200 / 1680 channels, see
:mod:`deqcert.models.mdeq_head`).  Deviations from the published models:
group norm replaces batch norm in the stem and the head (batch norm would
make a sample's logits depend on its batch), and the stem is one convolution
followed by the branch-0 injection convolution.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from ..errors import DataError
from .base import (
    DEQModel,
    ImageModelOptions,
    PooledFeatures,
    ResidualBlock,
    conv3x3,
    downsampled,
    group_norm,
)
from .mdeq_head import MultiscaleHead

CIFAR10_INPUT: dict[str, Any] = {
    "in_channels": 3,
    "image_size": 32,
    "mean": (0.4914, 0.4822, 0.4465),
    "std": (0.2470, 0.2435, 0.2616),
}
PUBLISHED: dict[str, Any] = {  # shared by both published CIFAR-10 configurations
    "stem_stride": 1,
    "groups": 8,
    "expansion": 5,
    "weight_norm": True,
    "injection_branches": "first",
    "cell": "published",
    "head": "multiscale",
}

PRESETS: dict[str, dict[str, Any]] = {
    # Cheap enough to certify on a CPU: branches at 14x14 and 7x7 for MNIST.
    "small": {"widths": (16, 32), "stem_channels": 16, "stem_stride": 2, "head_channels": 32},
    # Closer to the published MDEQ-small: three branches from full resolution.
    "large": {"widths": (32, 64, 128), "stem_channels": 32, "stem_stride": 1, "head_channels": 128},
    # The published CIFAR-10 MDEQ-Small and MDEQ-Large (see the module docstring).
    "cifar10-small": {
        **CIFAR10_INPUT,
        **PUBLISHED,
        "widths": (8, 16, 32),
        "stem_channels": 8,
        "head_widths": (7, 14, 28),
        "final_channels": 200,
        "dropout": 0.2,
    },
    "cifar10-large": {
        **CIFAR10_INPUT,
        **PUBLISHED,
        "widths": (32, 64, 128, 256),
        "stem_channels": 32,
        "head_widths": (14, 28, 56, 112),
        "final_channels": 1680,
        "dropout": 0.22,
    },
}


class MDEQOptions(ImageModelOptions):
    preset: Literal["small", "large", "cifar10-small", "cifar10-large"] = Field(
        "small", description="defaults for the fields below (any field given explicitly wins)"
    )
    widths: tuple[int, ...] | None = Field(None, description="channels of each branch")
    stem_channels: int | None = Field(None, ge=1, description="channels after the stem")
    stem_stride: Literal[1, 2] | None = Field(None, description="stride of the stem")
    head_channels: int | None = Field(None, ge=1, description="channels of the pooled head")
    head_pool: int = Field(4, ge=1, description="the pooled head average-pools to this size")
    groups: int = Field(4, ge=1, description="group-norm groups")
    expansion: int = Field(1, ge=1, description="inner channels of a block per branch channel")
    weight_norm: bool = Field(False, description="weight-normalise every convolution of f")
    dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="variational dropout in f (training only)"
    )
    injection_branches: Literal["all", "first"] = Field(
        "all", description="branches that receive the input injection"
    )
    cell: Literal["deqcert", "published"] = Field(
        "deqcert",
        description="deqcert: blocks end relu(norm(.)), fusion is norm then ReLU; published: "
        "blocks end norm(relu(.)), fusion is ReLU, 1x1 convolution, affine-free norm",
    )
    head: Literal["pooled", "multiscale"] = Field(
        "pooled", description="pooled features per branch, or the published multiscale head"
    )
    head_widths: tuple[int, ...] | None = Field(
        None, description="bottleneck widths of the multiscale head, one per branch"
    )
    final_channels: int | None = Field(
        None, ge=1, description="channels before the classifier of the multiscale head"
    )

    @model_validator(mode="before")
    @classmethod
    def _fill_from_preset(cls, data: Any) -> Any:
        if isinstance(data, dict):
            name = data.get("preset", "small")
            preset = PRESETS.get(name, {}) if isinstance(name, str) else {}
            fill = {k: v for k, v in preset.items() if data.get(k) is None}
            if (
                "in_channels" in preset
                and data.get("in_channels", preset["in_channels"]) != (preset["in_channels"])
            ):  # another input depth: the preset's per-channel normalisation does not fit
                fill.pop("mean", None)
                fill.pop("std", None)
            data = {**data, **fill}
        return data

    @model_validator(mode="after")
    def _check_geometry(self) -> MDEQOptions:
        if not self.widths or any(w < 1 for w in self.widths):
            raise ValueError("widths must be one or more positive channel counts")
        if self.head == "pooled" and self.head_channels is None:
            self.head_channels = 32
        if self.head == "multiscale":
            if self.head_widths is None or self.final_channels is None:
                raise ValueError("head 'multiscale' needs head_widths and final_channels")
            if len(self.head_widths) != len(self.widths) or min(self.head_widths) < 1:
                raise ValueError(
                    f"head_widths needs {len(self.widths)} positive widths (one per branch), "
                    f"got {self.head_widths}"
                )
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
        injected = len(widths) if o.injection_branches == "all" else 1
        self.injections = nn.ModuleList(
            injection_layers(o.stem_channels, w, i, o.groups)
            for i, w in enumerate(widths[:injected])
        )
        self.blocks = nn.ModuleList(
            ResidualBlock(w, o.groups, hidden=o.expansion * w, norm_last=o.cell == "published")
            for w in widths
        )
        self.fuse = nn.ModuleList(
            nn.ModuleList(
                nn.Identity() if src == dst else Resample(src, dst, widths, self.sizes, o.groups)
                for src in range(len(widths))
            )
            for dst in range(len(widths))
        )
        if o.cell == "deqcert":
            self.fuse_norms = nn.ModuleList(group_norm(w, o.groups) for w in widths)
        else:
            self.fuse_norms = nn.ModuleList(
                nn.Sequential(
                    nn.ReLU(),
                    nn.Conv2d(w, w, 1, bias=False),
                    group_norm(w, max(1, o.groups // 2), affine=False),
                )
                for w in widths
            )
        if o.weight_norm:
            for conv in [*self.blocks.modules(), *self.fuse.modules(), *self.fuse_norms.modules()]:
                if isinstance(conv, nn.Conv2d):
                    weight_norm(conv)
        self.head: nn.Module
        if o.head == "multiscale":
            self.head = MultiscaleHead(
                widths, o.head_widths, o.final_channels, o.num_classes, o.groups
            )
        else:
            self.heads = nn.ModuleList(
                PooledFeatures(w, o.head_channels, o.head_pool, o.groups) for w in widths
            )
            features = len(widths) * o.head_channels * o.head_pool**2
            self.classifier = nn.Linear(features, o.num_classes)
        self._dropout_mask: Tensor | None = None

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
        injected = [inject(stem) for inject in self.injections]
        batch = x.shape[0]
        zeros = [x.new_zeros(batch, *shape) for shape in self.shapes[len(injected) :]]
        u = self.pack(injected + zeros)
        self._draw_dropout(u)
        return u

    def _draw_dropout(self, u: Tensor) -> None:
        """Variational dropout: one mask per batch (each ``inject``), the same in every ``f``."""
        p = float(self.options.dropout)
        if self.training and p > 0:
            keep = torch.bernoulli(torch.full_like(u, 1.0 - p))
            self._dropout_mask = keep / (1.0 - p)
        else:
            self._dropout_mask = None

    def _masks(self, z: Tensor) -> list[Tensor | None]:
        mask = self._dropout_mask if self.training else None
        if mask is None:
            return [None] * len(self.shapes)
        if mask.shape != z.shape:
            raise DataError(
                f"mdeq: dropout mask of shape {tuple(mask.shape)} drawn by inject() does not "
                f"match the state {tuple(z.shape)}; call inject() on the batch being trained"
            )
        return list(self.unpack(mask))

    def f(self, z: Tensor, u: Tensor) -> Tensor:
        updated = [
            block(zi, ui, mi)
            for block, zi, ui, mi in zip(
                self.blocks, self.unpack(z), self.unpack(u), self._masks(z), strict=True
            )
        ]
        norm_first = self.options.cell == "deqcert"
        fused = []
        for dst, (resamplers, norm) in enumerate(zip(self.fuse, self.fuse_norms, strict=True)):
            total = updated[dst]
            resample: nn.Module
            for src, resample in enumerate(resamplers):  # type: ignore[arg-type]
                if src != dst:
                    total = total + resample(updated[src])
            fused.append(F.relu(norm(total)) if norm_first else norm(total))
        return self.pack(fused)

    def readout(self, z: Tensor) -> Tensor:
        branches = self.unpack(z)
        if self.options.head == "multiscale":
            return self.head(branches)  # type: ignore[no-any-return]
        features = [head(zi) for head, zi in zip(self.heads, branches, strict=True)]
        return self.classifier(torch.cat(features, dim=1))  # type: ignore[no-any-return]
