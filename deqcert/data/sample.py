"""``mnist-sample``: 5,000 real MNIST digits bundled with the package.

A fixed stratified split, 4,000 ``train`` / 1,000 ``test`` images (400 / 100
a class); see ``deqcert/data/files/README.md`` for the source and licence and
``scripts/make_mnist_sample.py`` for how the file is made.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from ..options import ComponentOptions
from .base import InMemoryImages

SAMPLE_FILE = "mnist_sample.npz"


class MnistSample(InMemoryImages):
    """The bundled MNIST sample: ``(1, 28, 28)`` digits, 10 classes."""

    class Options(ComponentOptions):
        """No options: the sample is fixed."""

    def __init__(self, split: str = "test", **options: Any) -> None:
        super().__init__(split, **options)
        path = resources.files("deqcert").joinpath("data", "files", SAMPLE_FILE)
        try:
            with path.open("rb") as handle, np.load(handle, allow_pickle=False) as arrays:
                images = arrays[f"{split}_images"]
                labels = arrays[f"{split}_labels"]
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(f"bundled MNIST sample {path} is unreadable: {exc}") from None
        self._set_arrays(
            torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels), num_classes=10
        )
