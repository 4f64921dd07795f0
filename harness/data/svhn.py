"""SVHN (Street View House Numbers), cropped-digits format: ``train_32x32.mat``, ``test_32x32.mat``, ``extra_32x32.mat``.

Each file is a MATLAB v5 file read with ``scipy.io.loadmat``: ``X`` is a 32 x 32 x 3 x N uint8 array (height, width,
channel, sample) and ``y`` an N x 1 array of labels 1..10, where 10 stands for the digit 0 (so label 10 -> 0).
Looked up in ``DIR/svhn``, ``DIR/SVHN`` and ``DIR``; checked against the published MD5s (see ``checksums.py``).
Splits: ``train`` (73,257), ``test`` (26,032), ``extra`` (531,131).
"""
from __future__ import annotations

import numpy as np

from harness.core.errors import DataError
from harness.core.registry import DATASETS

from .base import ImageSet
from .checksums import published_md5, verify
from .download import data_root, describe_dirs, fetch, find_file
from .imagefolder import to_image_set

SPLITS = ("test", "train", "extra")
EPS = {"linf": 8 / 255, "l2": 0.5}


def read_svhn_mat(path) -> tuple[np.ndarray, np.ndarray]:
    """``(uint8 images N x 3 x 32 x 32, int64 labels 0..9)`` from an SVHN ``*_32x32.mat`` file."""
    from scipy.io import loadmat

    try:
        mat = loadmat(path, variable_names=["X", "y"])
    except (OSError, ValueError, TypeError, NotImplementedError) as err:
        raise DataError(f"{path}: not a readable MATLAB v5 .mat file ({' '.join(str(err).split())})") from None
    if "X" not in mat or "y" not in mat:
        raise DataError(f"{path}: .mat file without the variables X and y")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1).astype(np.int64)
    if x.ndim != 4 or x.shape[2] != 3 or x.shape[3] != len(y):
        raise DataError(f"{path}: X has shape {x.shape} and y {len(y)} labels; expected H x W x 3 x N and N")
    if y.size and (y.min() < 0 or y.max() > 10):
        raise DataError(f"{path}: labels outside 0..10")
    y[y == 10] = 0
    return np.ascontiguousarray(x.astype(np.uint8).transpose(3, 2, 0, 1)), y


@DATASETS.register("svhn", "SVHN 32x32 house-number digits from the official train/test/extra_32x32.mat files")
def svhn(split: str = "test", data_dir: str | None = None, download: bool = False) -> ImageSet:
    """SVHN from ``--data-dir`` (or ``DIR/svhn``); see the module docstring for the format."""
    if split not in SPLITS:
        raise DataError(f"svhn: unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    root = data_root("svhn", data_dir, download, "the official *_32x32.mat files")
    fname = f"{split}_32x32.mat"
    dirs = [root / "svhn", root / "SVHN", root]
    path = find_file([fname], dirs)
    if path is None:
        if not download:
            raise DataError(f"svhn: {fname} not found in {describe_dirs(dirs)}; put the official {fname} there "
                            f"or pass --set download=true")
        path = fetch("svhn", fname, dirs[0], md5=published_md5("svhn", fname))
    verify(path, "svhn")
    x, y = read_svhn_mat(path)
    note = f"SVHN official {split} split ({len(y):,} images, file order; label 10 read as digit 0)"
    return to_image_set(x, y, tuple(str(i) for i in range(10)), "svhn", note, EPS)
