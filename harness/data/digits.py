"""The embedded default: scikit-learn's bundled 8x8 handwritten digits (real data, no download).

Split (fixed, documented): the 1,797 images in scikit-learn's order; a stratified 80/20 split by
``sklearn.model_selection.train_test_split(test_size=0.2, random_state=0, stratify=y)`` gives
1,437 training and 360 test images.  Pixels 0..16 are scaled to [0, 1] by dividing by 16.

scikit-learn computes the images, labels and split once per machine (and scikit-learn version); they are kept in
the cache folder, so that a run imports no scikit-learn (0.5 CPU-s with the scipy.stats it pulls in), and read once
per process (a run reads the test split, its zoo model the train split).
"""
from __future__ import annotations

import functools
from importlib import metadata

import numpy as np
import torch

from harness.core.artifacts import atomic_save, cache_dir, safe_load
from harness.core.errors import DataError
from harness.core.registry import DATASETS

from .base import ImageSet

SPLIT_NOTE = "sklearn digits, stratified 80/20 split (random_state=0): 1437 train / 360 test"


@DATASETS.register("digits", "scikit-learn's bundled 8x8 digits (embedded default; 1437 train / 360 test)")
def digits(split: str = "test", data_dir: str | None = None, download: bool = False) -> ImageSet:
    if split not in ("train", "test"):
        raise DataError(f"digits: unknown split {split!r}; choose one of train, test")
    arrays = digits_arrays()
    x = (arrays["images"].numpy().astype(np.float32) / 16.0)[:, None]
    idx = arrays[split]
    return ImageSet(
        torch.from_numpy(x[idx.numpy()]), arrays["target"][idx], tuple(str(i) for i in range(10)), "digits",
        default_eps={"linf": 0.1, "l2": 0.5}, default_model="digits_cnn_adv", note=SPLIT_NOTE,
    )


@functools.cache
def digits_arrays() -> dict[str, torch.Tensor]:
    """``images`` (1797x8x8, the pixel values 0..16 exactly), ``target``, and the indices of ``train`` and ``test``:
    from the cache folder, else from scikit-learn (then cached; a damaged file is computed again)."""
    path = cache_dir() / f"digits-sklearn{metadata.version('scikit-learn')}.pt"
    try:
        return safe_load(path)
    except Exception:  # noqa: BLE001 - absent or damaged: computed again
        pass
    arrays = from_sklearn()
    try:
        atomic_save(arrays, path)
    except OSError:  # a read-only cache: computed on every run, as before
        pass
    return arrays


def from_sklearn() -> dict[str, torch.Tensor]:
    """The arrays as scikit-learn gives them: ``load_digits()`` and the documented stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    y = bunch.target.astype(np.int64)
    idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=0.2, random_state=0, stratify=y)
    images = bunch.images.astype(np.uint8)
    assert np.array_equal(images, bunch.images)  # integers 0..16: uint8 keeps them exactly
    return {"images": torch.from_numpy(images), "target": torch.from_numpy(y),
            "train": torch.from_numpy(idx_train.astype(np.int64)), "test": torch.from_numpy(idx_test.astype(np.int64))}
