"""Datasets: the bundled MNIST sample and the torchvision-backed loaders, offline."""

from __future__ import annotations

import hashlib
import pickle
import struct
from collections import Counter
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deqcert import DataError, OptionError, create_dataset, list_datasets


def test_registered() -> None:
    assert {"mnist-sample", "mnist", "cifar10", "imagefolder"} <= set(list_datasets())


@pytest.mark.parametrize(
    ("split", "size", "per_class"), [("train", 4000, 400), ("test", 1000, 100)]
)
def test_mnist_sample_split(split: str, size: int, per_class: int) -> None:
    data = create_dataset("mnist-sample", split=split)
    assert len(data) == size
    assert data.num_classes == 10 and data.input_shape == (1, 28, 28)
    x, label = data[0]
    assert x.dtype == torch.float32 and x.shape == (1, 28, 28)
    assert 0.0 <= float(data.images.min()) and float(x.max()) <= 1.0 and isinstance(label, int)
    counts = Counter(data.labels.tolist())
    assert counts == {digit: per_class for digit in range(10)}
    # shuffled, not sorted by class
    assert len(set(data.labels[:20].tolist())) > 3


def test_mnist_sample_is_real_digits_and_splits_disjoint() -> None:
    path = resources.files("deqcert").joinpath("data", "files", "mnist_sample.npz")
    with path.open("rb") as handle, np.load(handle, allow_pickle=False) as arrays:
        train, test = arrays["train_source_index"], arrays["test_source_index"]
        images = arrays["test_images"]
    assert not set(train.tolist()) & set(test.tolist())
    assert len(set(train.tolist()) | set(test.tolist())) == 5000
    # digits: mostly dark background, some saturated strokes
    assert images.dtype == np.uint8 and images.max() == 255
    assert 0.7 < float((images == 0).mean()) < 0.95


def test_mnist_sample_rejects_bad_split() -> None:
    with pytest.raises(OptionError, match="unknown split 'val'"):
        create_dataset("mnist-sample", split="val")


# -- torchvision MNIST, raw IDX files -------------------------------------------------------


def _write_idx(path: Path, array: np.ndarray) -> None:
    magic = 0x0800 | array.ndim  # unsigned byte data
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _write_mnist(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for split, prefix, count in (("train", "train", 6), ("test", "t10k", 5)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=count, dtype=np.uint8)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        written[split] = (images, labels)
    return written


@pytest.mark.parametrize("split", ["train", "test"])
def test_mnist_from_idx_files(tmp_path: Path, split: str) -> None:
    images, labels = _write_mnist(tmp_path)[split]
    data = create_dataset("mnist", split=split, root=str(tmp_path))
    assert len(data) == len(labels) and data.input_shape == (1, 28, 28)
    x, label = data[2]
    assert label == labels[2]
    assert torch.allclose(x[0], torch.from_numpy(images[2]).float() / 255)


def test_mnist_missing_files_names_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"MNIST/raw/t10k-images-idx3-ubyte.*download=True"):
        create_dataset("mnist", root=str(tmp_path))
    _write_mnist(tmp_path)
    (tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"missing file .*train-labels-idx1-ubyte"):
        create_dataset("mnist", split="test", root=str(tmp_path))


# -- torchvision CIFAR-10, python batches ----------------------------------------------------


def _write_cifar(root: Path, n: int = 4) -> dict[str, str]:
    """Write the ``cifar-10-batches-py`` layout with ``n`` images a batch; return MD5s.

    The official batches are Python pickles, so writing the fixture needs
    pickle (deqcert itself never unpickles anything; torchvision does).
    """
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    md5 = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        batch = {
            "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            "labels": [(k + i) % 10 for i in range(n)],
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(
        pickle.dumps({"label_names": [f"class{i}" for i in range(10)]})
    )
    for path in folder.iterdir():
        md5[path.name] = hashlib.md5(path.read_bytes()).hexdigest()
    return md5


def test_cifar10_refuses_files_failing_md5(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    with pytest.raises(DataError, match="MD5"):
        create_dataset("cifar10", root=str(tmp_path))


def test_cifar10_missing_files_names_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cifar-10-batches-py/test_batch.*download=True"):
        create_dataset("cifar10", root=str(tmp_path))


def test_cifar10_reads_python_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real on-disk format, accepted once torchvision's MD5 table lists the fixture's sums.

    torchvision hard-codes the MD5 of the official release for every batch
    file, so a synthetic fixture can only pass by swapping that table; the
    reading code path (torchvision's and ours) is otherwise untouched.
    """
    from torchvision.datasets import CIFAR10

    md5 = _write_cifar(tmp_path)
    monkeypatch.setattr(CIFAR10, "train_list", [[n, md5[n]] for n, _ in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, "test_list", [[n, md5[n]] for n, _ in CIFAR10.test_list])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5["batches.meta"]})
    train = create_dataset("cifar10", split="train", root=str(tmp_path))
    test = create_dataset("cifar10", split="test", root=str(tmp_path))
    assert (len(train), len(test)) == (20, 4)
    assert test.input_shape == (3, 32, 32) and test.num_classes == 10
    row = pickle.loads((tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes())
    x, label = test[1]
    assert label == row["labels"][1]
    # rows are 1024 red, 1024 green, 1024 blue values, each row-major 32x32
    expected = torch.from_numpy(row["data"][1].reshape(3, 32, 32)).float() / 255
    assert torch.allclose(x, expected)


# -- ImageFolder ----------------------------------------------------------------------------


def _write_folder(root: Path) -> None:
    rng = np.random.default_rng(2)
    for split in ("train", "val"):
        for cls, count in (("cat", 2), ("dog", 3)):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, size=(20 + i, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")


@pytest.mark.parametrize("channels", [1, 3])
def test_imagefolder(tmp_path: Path, channels: int) -> None:
    _write_folder(tmp_path)
    data = create_dataset(
        "imagefolder", split="val", root=str(tmp_path), image_size=16, channels=channels
    )
    assert len(data) == 5 and data.num_classes == 2 and data.classes == ["cat", "dog"]
    assert data.input_shape == (channels, 16, 16)
    labels = []
    for i in range(len(data)):
        x, label = data[i]
        assert x.shape == (channels, 16, 16) and 0 <= float(x.min()) and float(x.max()) <= 1
        labels.append(label)
    assert sorted(labels) == [0, 0, 1, 1, 1]


def test_imagefolder_missing_split_lists_found(tmp_path: Path) -> None:
    _write_folder(tmp_path)
    with pytest.raises(DataError, match=r"missing split folder .*test \(found: train, val\)"):
        create_dataset("imagefolder", split="test", root=str(tmp_path))
