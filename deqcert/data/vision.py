"""torchvision-backed datasets: ``mnist``, ``cifar10`` and ``imagefolder``.

Nothing is downloaded unless ``download=True`` is passed; a missing file is a
:class:`~deqcert.errors.DataError` naming the path that was looked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from ..errors import DataError
from ..options import ComponentOptions
from .base import ImageDataset, InMemoryImages

MNIST_FILES = (  # torchvision wants all four, whichever split is read
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
)
CIFAR10_FILES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}


class DownloadOptions(ComponentOptions):
    """Where the files live and whether torchvision may fetch them."""

    root: Path = Field(Path("data"), description="directory holding the torchvision files")
    download: bool = Field(False, description="download the files when they are missing")


def require_files(owner: str, folder: Path, names: tuple[str, ...]) -> None:
    """Raise :class:`DataError` naming the first missing file (with a download hint)."""
    for name in names:
        path = folder / name
        if not path.is_file():
            raise DataError(
                f"{owner}: missing file {path}; pass download=True to fetch the dataset "
                "or point the 'root' option at an existing copy"
            )


class MNIST(InMemoryImages):
    """torchvision MNIST (raw IDX files under ``root/MNIST/raw``): ``(1, 28, 28)``."""

    Options = DownloadOptions

    def __init__(self, split: str = "test", **options: Any) -> None:
        super().__init__(split, **options)
        from torchvision import datasets

        root = Path(self.options.root)
        if not self.options.download:
            require_files("mnist", root / "MNIST" / "raw", MNIST_FILES)
        try:
            data = datasets.MNIST(str(root), train=split == "train", download=self.options.download)
        except (RuntimeError, OSError, ValueError) as exc:
            raise DataError(f"mnist: cannot load the {split} split from {root}: {exc}") from None
        self._set_arrays(data.data.unsqueeze(1), torch.as_tensor(data.targets), num_classes=10)


class CIFAR10(InMemoryImages):
    """torchvision CIFAR-10 (python batches under ``root/cifar-10-batches-py``): ``(3, 32, 32)``.

    torchvision verifies every batch file against the MD5 of the official
    release, so altered or partial copies are refused.
    """

    Options = DownloadOptions

    def __init__(self, split: str = "test", **options: Any) -> None:
        super().__init__(split, **options)
        from torchvision import datasets

        root = Path(self.options.root)
        if not self.options.download:
            folder = root / "cifar-10-batches-py"
            require_files("cifar10", folder, CIFAR10_FILES[split] + ("batches.meta",))
        try:
            data = datasets.CIFAR10(
                str(root), train=split == "train", download=self.options.download
            )
        except (RuntimeError, OSError, ValueError) as exc:
            raise DataError(
                f"cifar10: cannot load the {split} split from {root} (torchvision checks the "
                f"official MD5 of every batch file): {exc}"
            ) from None
        images = torch.from_numpy(data.data).permute(0, 3, 1, 2)
        self._set_arrays(images, torch.as_tensor(data.targets), num_classes=10)


class ImageFolderOptions(ComponentOptions):
    """An ImageNet-style tree ``root/<split>/<class>/<image>``."""

    root: Path = Field(Path("data"), description="folder holding one subfolder per split")
    image_size: int = Field(224, ge=1, description="images are resized and centre-cropped")
    channels: Literal[1, 3] = Field(3, description="1 (greyscale) or 3 (RGB)")


class ImageFolder(ImageDataset):
    """Images read lazily from ``root/<split>/<class>/*``; classes sorted by folder name."""

    Options = ImageFolderOptions
    splits = ("train", "val", "test")

    def __init__(self, split: str = "test", **options: Any) -> None:
        super().__init__(split, **options)
        from torchvision import datasets, transforms

        folder = Path(self.options.root) / split
        if not folder.is_dir():
            found = sorted(p.name for p in Path(self.options.root).glob("*") if p.is_dir())
            raise DataError(
                f"imagefolder: missing split folder {folder} "
                f"(found: {', '.join(found) if found else 'nothing'})"
            )
        size, channels = self.options.image_size, self.options.channels
        steps: list[Any] = [transforms.Resize(size), transforms.CenterCrop(size)]
        if channels == 1:
            steps.append(transforms.Grayscale(num_output_channels=1))
        steps.append(transforms.ToTensor())
        try:
            self._folder = datasets.ImageFolder(str(folder), transform=transforms.Compose(steps))
        except (FileNotFoundError, OSError) as exc:
            raise DataError(f"imagefolder: no usable images under {folder}: {exc}") from None
        self.classes: list[str] = list(self._folder.classes)
        self.num_classes = len(self.classes)
        self.input_shape = (channels, size, size)

    def __len__(self) -> int:
        return len(self._folder)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        x, label = self._folder[index]
        return x, int(label)
