"""The embedded default: scikit-learn's bundled 8x8 handwritten digits (real data, no download).

Split (fixed, documented): the 1,797 images in scikit-learn's order; a stratified 80/20 split by
``sklearn.model_selection.train_test_split(test_size=0.2, random_state=0, stratify=y)`` gives
1,437 training and 360 test images.  Pixels 0..16 are scaled to [0, 1] by dividing by 16.

The images, labels and both splits' indices, exactly as scikit-learn gives them (``from_sklearn``), are shipped in
``harness/data/digits.npz`` (package data; the digest of its arrays is recorded in ``SHA256`` and checked on load,
and tests/test_core.py checks the file against scikit-learn), so that a run imports no scikit-learn (0.5 CPU-s with
the scipy.stats it pulls in); they are read once per process (a run reads the test split, its zoo model the train
split).  The data are the UCI optical recognition of handwritten digits test set (Alpaydin and Kaynak, 1998), as
scikit-learn distributes them.
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np
import torch

from harness.core.errors import DataError
from harness.core.registry import DATASETS

from .base import ImageSet

SPLIT_NOTE = "sklearn digits, stratified 80/20 split (random_state=0): 1437 train / 360 test"
SHIPPED = Path(__file__).with_name("digits.npz")
KEYS = ("images", "target", "train", "test")  # uint8 1797x8x8 (0..16), uint8 labels, uint16 indices
SHA256 = "b7f229d2abaf0d3ad978c748b60b4d58ca87645b63b5c1f4cf50a7d7d4a6ffac"


@DATASETS.register("digits", "scikit-learn's bundled 8x8 digits (embedded default; 1437 train / 360 test)")
def digits(split: str = "test", data_dir: str | None = None, download: bool = False) -> ImageSet:
    if split not in ("train", "test"):
        raise DataError(f"digits: unknown split {split!r}; choose one of train, test")
    arrays = digits_arrays()
    x = (arrays["images"].astype(np.float32) / 16.0)[:, None]
    y = arrays["target"].astype(np.int64)
    idx = arrays[split].astype(np.int64)
    return ImageSet(
        torch.from_numpy(x[idx]), torch.from_numpy(y[idx]), tuple(str(i) for i in range(10)), "digits",
        default_eps={"linf": 0.1, "l2": 0.5}, default_model="digits_cnn_adv", note=SPLIT_NOTE,
    )


@functools.cache
def digits_arrays(path: Path = SHIPPED) -> dict[str, np.ndarray]:
    """The shipped arrays (``KEYS``), after checking their digest."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in KEYS}
    except (OSError, KeyError, ValueError) as err:
        raise DataError(f"the shipped digits {path} cannot be read ({err}); reinstall the package") from None
    if digest(arrays) != SHA256:
        raise DataError(f"the shipped digits {path} have digest {digest(arrays)[:12]}..., the module records "
                        f"{SHA256[:12]}... (a damaged or edited file; reinstall the package)")
    return arrays


def digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over each array's name, dtype, shape and bytes, in ``KEYS`` order."""
    h = hashlib.sha256()
    for k in KEYS:
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def from_sklearn() -> dict[str, np.ndarray]:
    """The arrays as scikit-learn gives them: ``load_digits()`` and the documented stratified split (what
    ``digits.npz`` holds; write it with ``np.savez_compressed(SHIPPED, **from_sklearn())`` and record ``digest``)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    idx_train, idx_test = train_test_split(np.arange(len(bunch.target)), test_size=0.2, random_state=0,
                                           stratify=bunch.target)
    out = {"images": bunch.images.astype(np.uint8), "target": bunch.target.astype(np.uint8),
           "train": idx_train.astype(np.uint16), "test": idx_test.astype(np.uint16)}
    assert np.array_equal(out["images"], bunch.images) and np.array_equal(out["target"], bunch.target)
    return out
