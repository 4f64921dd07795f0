"""Where plugins imported the registries from before they moved to the floor: the same objects, re-exported for
third-party packages.  New code imports ``harness.core.registry`` (and ``harness.plugins.load_builtins``)."""
from harness.core.registry import ATTACKS, DATASETS, DEFENSES, MODELS, RECIPES, REGISTRIES, ZOO, Param, Registry
from harness.plugins import load_builtins

__all__ = ["ATTACKS", "DATASETS", "DEFENSES", "MODELS", "RECIPES", "REGISTRIES", "ZOO", "Param", "Registry",
           "load_builtins"]
