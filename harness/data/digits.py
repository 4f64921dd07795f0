"""The embedded default: scikit-learn's bundled 8x8 handwritten digits (real data, no download).

Split (fixed, documented): the 1,797 images in scikit-learn's order; a stratified 80/20 split by
``sklearn.model_selection.train_test_split(test_size=0.2, random_state=0, stratify=y)`` gives
1,437 training and 360 test images.  Pixels 0..16 are scaled to [0, 1] by dividing by 16.
"""
from __future__ import annotations

import numpy as np
import torch

from harness.core.registry import DATASETS

from .base import ImageSet

SPLIT_NOTE = "sklearn digits, stratified 80/20 split (random_state=0): 1437 train / 360 test"


@DATASETS.register("digits", "scikit-learn's bundled 8x8 digits (embedded default; 1437 train / 360 test)")
def digits(split: str = "test", data_dir: str | None = None, download: bool = False) -> ImageSet:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None]
    y = bunch.target.astype(np.int64)
    idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=0.2, random_state=0, stratify=y)
    idx = {"train": idx_train, "test": idx_test}[split]
    return ImageSet(
        torch.from_numpy(x[idx]), torch.from_numpy(y[idx]), tuple(str(i) for i in range(10)), "digits",
        default_eps={"linf": 0.1, "l2": 0.5}, default_model="digits_cnn_adv", note=SPLIT_NOTE,
    )
