"""MNIST and Fashion-MNIST from the official idx files.

Files: ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz`` and
``t10k-labels-idx1-ubyte.gz`` (uncompressed copies without ``.gz`` are accepted too, unchecked).  MNIST is looked
up in ``DIR/mnist``, ``DIR/MNIST/raw``, ``DIR/MNIST`` and ``DIR``; Fashion-MNIST in ``DIR/fashion_mnist``,
``DIR/fashion-mnist``, ``DIR/FashionMNIST/raw``, ``DIR/FashionMNIST`` and ``DIR`` (``DIR`` is ``--data-dir``).
The ``.gz`` files are checked against the published MD5s (see ``checksums.py``).

idx format (big-endian): two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions ``d``,
``d`` int32 sizes, then the values in row-major order.  Images are 28x28 bytes, 0..255, scaled to [0, 1].

Splits: ``train`` (60,000), ``test`` (10,000), and two documented small-scale splits of the official test set
for machines without the training images: ``test-train`` (its first 80%: images 0-7,999) and
``test-holdout`` (its last 20%: images 8,000-9,999).
"""
from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harness.core.errors import DataError
from harness.core.registry import DATASETS

from .base import ImageSet
from .checksums import published_md5, verify
from .download import data_root, describe_dirs, fetch, find_file

SPLITS = ("test", "train", "test-train", "test-holdout")
TEST_TRAIN_FRACTION = 0.8  # test-train = first 80% of the test split (8,000 of 10,000)
FILES = {  # split part -> (images, labels), without ".gz"
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
EPS = {"linf": 0.3, "l2": 2.0}


def read_idx(path: str | Path) -> np.ndarray:
    """Parse an idx file (gzipped or not, told apart by its first bytes) into a numpy array."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: not a readable gzip file ({err}); replace it with the official idx .gz file") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in IDX_DTYPES:
        raise DataError(f"{path}: not an idx file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated idx header")
    shape = tuple(int(s) for s in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"{path}: idx header says shape {shape} ({expected} bytes) but the file has {len(raw)} bytes")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


@dataclass(frozen=True)
class _Spec:
    name: str
    title: str
    classes: tuple[str, ...]
    dirs: Callable[[Path], list[Path]]


MNIST = _Spec("mnist", "MNIST", tuple(str(i) for i in range(10)),
              lambda d: [d / "mnist", d / "MNIST" / "raw", d / "MNIST", d])
FASHION = _Spec("fashion_mnist", "Fashion-MNIST", FASHION_CLASSES,
                lambda d: [d / "fashion_mnist", d / "fashion-mnist", d / "FashionMNIST" / "raw", d / "FashionMNIST", d])


def _locate(spec: _Spec, stem: str, dirs: list[Path], download: bool, split: str) -> Path:
    path = find_file([stem + ".gz", stem], dirs)
    if path is None:
        if not download:
            hint = "; the splits test-train and test-holdout need only the t10k files" if split == "train" else ""
            raise DataError(
                f"{spec.name}: {stem}.gz not found in {describe_dirs(dirs)}; put the official idx .gz files "
                f"there or pass --set download=true{hint}"
            )
        path = fetch(spec.name, stem + ".gz", dirs[0], md5=published_md5(spec.name, stem + ".gz"))
    verify(path, spec.name)
    return path


def _load(spec: _Spec, split: str, data_dir: str | None, download: bool) -> ImageSet:
    if split not in SPLITS:
        raise DataError(f"{spec.name}: unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    root = data_root(spec.name, data_dir, download, "the official idx .gz files")
    part = "train" if split == "train" else "test"
    dirs = spec.dirs(root)
    img_path, lbl_path = (_locate(spec, stem, dirs, download, split) for stem in FILES[part])
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{spec.name}: {img_path.name} has shape {images.shape} but {lbl_path.name} has "
                        f"{labels.shape}; expected N x 28 x 28 images and N labels")
    if labels.size and (labels.min() < 0 or labels.max() >= len(spec.classes)):
        raise DataError(f"{spec.name}: {lbl_path} has labels outside 0..{len(spec.classes) - 1}")
    n = len(labels)
    cut = int(round(n * TEST_TRAIN_FRACTION))
    if split == "test-train":
        images, labels = images[:cut], labels[:cut]
        note = (f"{spec.title} test images 0-{cut - 1:,} (first {cut:,} of the official {n:,} test images) used "
                f"as a small training split; test-holdout is the other {n - cut:,}")
    elif split == "test-holdout":
        images, labels = images[cut:], labels[cut:]
        note = (f"{spec.title} test images {cut:,}-{n - 1:,} (last {n - cut:,} of the official {n:,} test images), "
                f"held out from test-train")
    else:
        note = f"{spec.title} official {split} split ({n:,} images)"
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return ImageSet(x, y, spec.classes, spec.name, default_eps=dict(EPS), default_model=None, note=note)


@DATASETS.register("mnist", "MNIST 28x28 digits from the official idx .gz files (splits: test, train, "
                            "test-train, test-holdout)")
def mnist(split: str = "test", data_dir: str | None = None, download: bool = False) -> ImageSet:
    """MNIST from ``--data-dir`` (or ``DIR/mnist``); see the module docstring for files and splits."""
    return _load(MNIST, split, data_dir, download)


@DATASETS.register("fashion_mnist", "Fashion-MNIST 28x28 clothing images from the official idx .gz files "
                                    "(splits: test, train, test-train, test-holdout)")
def fashion_mnist(split: str = "test", data_dir: str | None = None, download: bool = False) -> ImageSet:
    """Fashion-MNIST from ``--data-dir`` (or ``DIR/fashion_mnist``); see the module docstring."""
    return _load(FASHION, split, data_dir, download)
