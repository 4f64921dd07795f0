"""Out-of-distribution settings: an in-distribution, auxiliary TRAINING outliers and TEST outlier sets.

Follows the three distributions of the safe-spot paper, section 3.6 (after Outlier Exposure, Hendrycks et al. 2019b):
D_in (learned), D_out^train (auxiliary outliers used in training/tuning) and D_out^test (to detect at test time,
unknown, "orthogonal" to D_out^train).

``digits_setting`` -- the small setting that runs on a CPU in seconds (no download):

* D_in: scikit-learn digits of classes 0-4 (labels 0..4), from the harness's fixed digits split
  (``harness.data.digits``): ``in_train`` = 80% of the training-split images of classes 0-4 (stratified,
  random_state=0), ``in_val`` = the other 20% (never trained on; used to tune detectors and mu together with the
  training outliers), ``in_test`` = the test-split images of classes 0-4 (180).
* D_out^train: digits of classes 5, 6, 7 from the TRAINING split (433 images, labels dropped).
* D_out^test (each disjoint from D_out^train by class or by source, as the paper requires):
  - "digits 8-9": every digits image (train and test split) of classes 8 and 9 -- held-out classes of the same
    source: the near-distribution outliers (the role of CIFAR-100 for a CIFAR-10 model).  None of them is used
    anywhere in training.
  - "MNIST 8-9": MNIST ``test-holdout`` images (official test images 8,000-9,999) of classes 8 and 9, 28x28
    resized to 8x8 by exact area averaging (each 8x8 pixel = the mean of the 3.5 x 3.5 source area; computed as
    2x nearest upsampling to 56x56 then 7x7 average pooling).  Another source, unseen classes; only when the
    MNIST test files are found (``data_dir``, default ``../shared/data`` next to the repository).
  - "Gaussian noise": N(0.5, 0.25^2) per pixel, clipped to [0, 1]: Outlier Exposure's CIFAR test code draws
    N(0, 0.5^2) clipped to [-1, 1] in a [-1, 1] input range, which is this law mapped to [0, 1] (some of its other
    scripts draw N(0.5, 0.5^2) clipped to [0, 1] instead; pass your own tensor for that variant).
  - "Uniform noise": U[0, 1] per pixel.
  Noise sets are drawn from a generator seeded with ``seed`` (``n_noise`` images each).

``PAPER_SETTING`` -- the paper's CIFAR-10 setting, as a documented preset for users who have the data (section 4.4
and Table 4; supplementary E.1 is not in the seed, so sizes follow Outlier Exposure's protocol).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from harness.core.errors import DataError

from .base import ImageSet, check_unit_range

IN_CLASSES = (0, 1, 2, 3, 4)
TRAIN_OUTLIER_CLASSES = (5, 6, 7)
TEST_OUTLIER_CLASSES = (8, 9)
VAL_FRACTION = 0.2
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data"

# The paper's setting (section 4.4, Table 4): a CIFAR-10 WRN; auxiliary outliers as in Outlier Exposure; test
# outliers: CIFAR-100, SVHN, TinyImageNet, LSUN and synthetic noise; metrics averaged over 10 runs.  "loader": the
# harness dataset name where one exists (``harness list datasets``), else how to get the images.
PAPER_SETTING = {
    "in_distribution": {"loader": "cifar10", "split": "train / test", "model": "WRN-34-10 (wide_resnet)",
                        "eps": 8 / 255, "delta": 8 / 255, "norm": "linf"},
    "train_outliers": {"name": "80 Million Tiny Images (Outlier Exposure's auxiliary set, CIFAR images removed)",
                       "loader": None, "note": "not distributed any more; OE-style 300K random images are the usual stand-in"},
    "test_outliers": {
        "CIFAR-100": {"loader": "cifar100", "split": "test", "kind": "near-distribution"},
        "SVHN": {"loader": "svhn", "split": "test", "kind": "far"},
        "TinyImageNet": {"loader": "imagefolder", "note": "resized to 32x32 (e.g. ODIN's 'Tiny ImageNet (resize)')",
                         "kind": "near-distribution"},
        "LSUN": {"loader": "imagefolder", "note": "resized to 32x32 (ODIN's 'LSUN (resize)')", "kind": "near-distribution"},
        "Gaussian noise": {"loader": None, "law": "N(0.5, 0.25^2) clipped to [0,1]", "kind": "synthetic"},
    },
    "ood_per_set": "len(in_test) // 5 (Outlier Exposure's protocol: 2,000 OOD vs 10,000 in-distribution images)",
    "runs": 10,
    "baselines": ["Mahalanobis (tuned on D_out^train, not D_out^test)", "Outlier Exposure", "Gram matrices"],
    "metrics": ["AUROC", "AUPR", "FPR95"],
}


@dataclass
class OODSetting:
    """An OOD benchmark: labelled in-distribution splits and unlabelled outlier image tensors in [0, 1]."""

    name: str
    in_train: ImageSet
    in_val: ImageSet
    in_test: ImageSet
    train_outliers: torch.Tensor
    test_outliers: dict[str, torch.Tensor]
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return self.in_train.num_classes


def area_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Exact area-average downsampling of N x C x H x W images to ``size`` x ``size`` (square images): each output
    pixel is the mean of its (H/size)^2 source area, fractional pixels weighted by their covered area
    (nearest-upsample by size/gcd(H, size), then average-pool)."""
    h = x.shape[-1]
    if x.shape[-2] != h:
        raise DataError(f"area_resize expects square images, got {tuple(x.shape[-2:])}")
    g = np.gcd(h, size)
    up = size // g
    big = x.repeat_interleave(up, -1).repeat_interleave(up, -2) if up > 1 else x
    k = h * up // size
    return F.avg_pool2d(big, k)


def gaussian_noise(n: int, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (0.5 + 0.25 * torch.randn((n, *shape), generator=gen)).clamp(0, 1)


def uniform_noise(n: int, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed + 1)
    return torch.rand((n, *shape), generator=gen)


def _subset(data: ImageSet, classes, note: str) -> ImageSet:
    keep = torch.isin(data.y, torch.tensor(classes))
    remap = torch.full((int(data.y.max()) + 1,), -1, dtype=torch.long)
    remap[torch.tensor(classes)] = torch.arange(len(classes))
    return ImageSet(data.x[keep], remap[data.y[keep]], tuple(str(c) for c in classes), data.name,
                    data.default_eps, None, note)


def digits_setting(seed: int = 0, data_dir: str | Path | None = None, n_noise: int = 500,
                   mnist: bool = True) -> OODSetting:
    """The small digits setting of the module docstring.  ``mnist=False`` (or MNIST files absent) drops the
    "MNIST 8-9" set; the note says which happened."""
    from sklearn.model_selection import train_test_split

    from . import load

    train, test = load("digits", "train"), load("digits", "test")
    tr = _subset(train, IN_CLASSES, "")
    i_fit, i_val = train_test_split(np.arange(len(tr)), test_size=VAL_FRACTION, random_state=0,
                                    stratify=tr.y.numpy())
    i_fit, i_val = torch.from_numpy(np.sort(i_fit)), torch.from_numpy(np.sort(i_val))
    base = "sklearn digits classes 0-4"
    in_train = ImageSet(tr.x[i_fit], tr.y[i_fit], tr.classes, "digits04", tr.default_eps, None,
                        f"{base}: 80% of the training split (stratified, random_state=0)")
    in_val = ImageSet(tr.x[i_val], tr.y[i_val], tr.classes, "digits04", tr.default_eps, None,
                      f"{base}: the other 20% of the training split (validation, never trained on)")
    in_test = _subset(test, IN_CLASSES, f"{base}: the test split")
    in_test.name = "digits04"
    x_out_train = train.x[torch.isin(train.y, torch.tensor(TRAIN_OUTLIER_CLASSES))]
    held = torch.cat([train.x[torch.isin(train.y, torch.tensor(TEST_OUTLIER_CLASSES))],
                      test.x[torch.isin(test.y, torch.tensor(TEST_OUTLIER_CLASSES))]])
    shape = tuple(in_test.x.shape[1:])
    outliers = {"digits 8-9": held}
    notes = {"train_outliers": f"sklearn digits classes 5-7, training split ({len(x_out_train)} images)",
             "digits 8-9": f"sklearn digits classes 8-9, train and test splits ({len(held)} images; held-out classes)"}
    root = Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR
    if mnist:
        try:
            m = load("mnist", "test-holdout", data_dir=str(root))
            xm = area_resize(m.x[torch.isin(m.y, torch.tensor(TEST_OUTLIER_CLASSES))], shape[-1])
            check_unit_range(xm, "MNIST 8-9 resized")
            outliers["MNIST 8-9"] = xm
            notes["MNIST 8-9"] = (f"MNIST test images 8,000-9,999 of classes 8-9 ({len(xm)}), 28x28 area-averaged "
                                  f"to {shape[-1]}x{shape[-1]}")
        except DataError as err:
            notes["MNIST 8-9"] = f"skipped: {err}"
    outliers["Gaussian noise"] = gaussian_noise(n_noise, shape, seed)
    outliers["Uniform noise"] = uniform_noise(n_noise, shape, seed)
    notes["Gaussian noise"] = f"{n_noise} images, N(0.5, 0.25^2) clipped to [0,1], seed {seed}"
    notes["Uniform noise"] = f"{n_noise} images, U[0,1], seed {seed}"
    return OODSetting("digits 0-4", in_train, in_val, in_test, x_out_train, outliers, notes)
