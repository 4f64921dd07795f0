"""Preprocessor defenses: trained purifiers in front of a fixed classifier (HGD, NRP, JATP) and bit-depth
reduction (a gradient-masking preprocessor, to show BPDA).  Importing this package registers them in
``harness.DEFENSES``; ``training.train_purifier`` trains any of the purifiers."""
from . import hgd, jatp, nrp, quantize  # noqa: F401 - register on import
from .training import METHODS, PurifierDefense, presets, train_purifier

__all__ = ["METHODS", "PurifierDefense", "presets", "train_purifier"]
