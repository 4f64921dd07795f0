"""Datasets: the embedded digits, and loaders for the standard on-disk formats under ``--data-dir``."""
from __future__ import annotations

from harness.core.registry import DATASETS

from . import cifar, digits, fonts, imagefolder, mnist, svhn  # noqa: F401 - register
from .base import ImageSet, check_unit_range


def load(name: str, split: str = "test", data_dir: str | None = None, download: bool = False) -> ImageSet:
    return DATASETS.create(name, split=split, data_dir=data_dir, download=download)


__all__ = ["ImageSet", "check_unit_range", "load"]
