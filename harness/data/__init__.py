"""Datasets: the embedded digits, loaders for the standard on-disk formats under ``--data-dir``, and your own
arrays, files and torch datasets (``files``)."""
from __future__ import annotations

from harness.core.registry import DATASETS

from . import cifar, digits, fonts, imagefolder, mnist, svhn  # noqa: F401 - register
from .base import ImageSet, check_unit_range
from .files import check_model_fits, from_arrays, from_dataset, load_file


def load(name: str, split: str = "test", data_dir: str | None = None, download: bool = False, **options) -> ImageSet:
    """The registered dataset ``name``; ``options`` are its own parameters (``resize=256, crop=224`` for an
    image folder)."""
    return DATASETS.create(name, split=split, data_dir=data_dir, download=download, **options)


__all__ = ["ImageSet", "check_model_fits", "check_unit_range", "from_arrays", "from_dataset", "load", "load_file"]
