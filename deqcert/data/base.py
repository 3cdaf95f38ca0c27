"""Shared pieces of the registered datasets.

Every dataset is a torch ``Dataset`` of ``(x, label)`` pairs with ``x`` a float
tensor of shape ``(C, H, W)`` in ``[0, 1]``, and exposes ``num_classes`` and
``input_shape`` so a model can be built to match it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import OptionError
from ..options import Configurable


class ImageDataset(Configurable, Dataset[tuple[Tensor, int]]):
    """Base class: validated options, a split, ``num_classes`` and ``input_shape``."""

    splits: tuple[str, ...] = ("train", "test")
    num_classes: int
    input_shape: tuple[int, int, int]

    def __init__(self, split: str = "test", **options: Any) -> None:
        Configurable.__init__(self, **options)
        check_split(self.registry_name or type(self).__name__, split, self.splits)
        self.split = split

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "split": self.split}


class InMemoryImages(ImageDataset):
    """A dataset held as one ``uint8`` tensor ``(N, C, H, W)`` plus integer labels."""

    images: Tensor
    labels: Tensor

    def _set_arrays(self, images: Tensor, labels: Tensor, num_classes: int) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise TypeError(
                f"expected uint8 (N, C, H, W) images, got {images.dtype} {images.shape}"
            )
        self.images = images.contiguous()
        self.labels = labels.to(torch.int64)
        self.num_classes = num_classes
        c, h, w = images.shape[1:]
        self.input_shape = (int(c), int(h), int(w))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.images[index].float().div_(255.0), int(self.labels[index])


def check_split(owner: str, split: str, accepted: Sequence[str]) -> None:
    """Raise :class:`OptionError` unless ``split`` is one of ``accepted``."""
    if split not in accepted:
        raise OptionError(
            f"{owner}: unknown split {split!r}. Accepted splits: {', '.join(accepted)}"
        )
