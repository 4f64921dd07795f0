"""Datasets: the embedded digits, and loaders for the standard on-disk formats under ``--data-dir``."""
from __future__ import annotations

import importlib

from ..registry import DATASETS
from .base import ImageSet, check_unit_range

for _module in ("digits", "mnist", "cifar", "svhn", "imagefolder"):
    try:
        importlib.import_module(f"{__name__}.{_module}")
    except ModuleNotFoundError as err:  # a loader module not written yet
        if err.name != f"{__name__}.{_module}":
            raise


def load(name: str, split: str = "test", data_dir: str | None = None, download: bool = False) -> ImageSet:
    return DATASETS.create(name, split=split, data_dir=data_dir, download=download)


__all__ = ["ImageSet", "check_unit_range", "load"]
