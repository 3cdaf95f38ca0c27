"""The multiscale classification head of the published MDEQ (Bai, Koltun and Kolter, 2020).

Each branch's fixed point goes through a bottleneck block that widens it to
``4 * head_width`` channels; the highest-resolution result is carried down the
branches by stride-2 convolutions, adding each lower branch's bottleneck
output on the way; a 1x1 convolution lifts the last sum to ``final_channels``,
which are averaged over the plane and classified by one linear layer.
Normalisation is group norm throughout (the published head uses batch norm,
which would make a certificate depend on the other samples of a batch).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .base import conv3x3, group_norm

EXPANSION = 4
"""Output channels of a head bottleneck per unit of its width (as published)."""


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 convolutions with a projected shortcut: ``cin`` to ``4 * width``."""

    def __init__(self, cin: int, width: int, groups: int) -> None:
        super().__init__()
        out = EXPANSION * width
        self.body = nn.Sequential(
            nn.Conv2d(cin, width, 1, bias=False),
            group_norm(width, groups),
            nn.ReLU(),
            conv3x3(width, width),
            group_norm(width, groups),
            nn.ReLU(),
            nn.Conv2d(width, out, 1, bias=False),
            group_norm(out, groups),
        )
        self.shortcut = nn.Sequential(nn.Conv2d(cin, out, 1, bias=False), group_norm(out, groups))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class MultiscaleHead(nn.Module):
    """Logits from the branch states ``[(B, widths[i], H_i, W_i)]`` (highest resolution first)."""

    def __init__(
        self,
        widths: tuple[int, ...],
        head_widths: tuple[int, ...],
        final_channels: int,
        num_classes: int,
        groups: int,
    ) -> None:
        super().__init__()
        if len(head_widths) != len(widths):
            raise ValueError(
                f"head_widths needs one width per branch ({len(widths)}), got {len(head_widths)}"
            )
        self.bottlenecks = nn.ModuleList(
            Bottleneck(w, h, groups) for w, h in zip(widths, head_widths, strict=True)
        )
        outs = [EXPANSION * h for h in head_widths]
        self.downs = nn.ModuleList(
            nn.Sequential(conv3x3(a, b, stride=2, bias=True), group_norm(b, groups), nn.ReLU())
            for a, b in zip(outs[:-1], outs[1:], strict=True)
        )
        self.final = nn.Sequential(
            nn.Conv2d(outs[-1], final_channels, 1, bias=True),
            group_norm(final_channels, groups),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(final_channels, num_classes)

    def forward(self, branches: list[Tensor]) -> Tensor:
        y = self.bottlenecks[0](branches[0])
        for down, bottleneck, z in zip(self.downs, self.bottlenecks[1:], branches[1:], strict=True):
            y = bottleneck(z) + down(y)
        y = self.final(y).mean(dim=(2, 3))
        return self.classifier(y)  # type: ignore[no-any-return]
