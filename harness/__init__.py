"""Adversarial attack-defense evaluation harness.

The engine: plugin registries, data, models, threat models, the evaluation loop, metrics and reports.
Attacks live in the top-level package ``attacks``, defenses in ``defenses``.
"""
from .errors import DataError, UsageError
from .registry import ATTACKS, DATASETS, DEFENSES, MODELS, RECIPES

__all__ = ["ATTACKS", "DATASETS", "DEFENSES", "MODELS", "RECIPES", "DataError", "UsageError"]
__version__ = "0.1.0"
