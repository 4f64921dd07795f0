"""Defenses.  Each module registers its defenses in ``harness.DEFENSES`` on import."""
import importlib

from .base import ABSTAIN, Defense, Detector, NoDefense, Preemptive, Preprocessor, Wrapper

for _module in ("preempt", "safe_spot", "smoothing", "purifiers", "magnet", "ood"):
    try:
        importlib.import_module(f"{__name__}.{_module}")
    except ModuleNotFoundError as err:  # a module not written yet
        if err.name != f"{__name__}.{_module}":
            raise

__all__ = ["ABSTAIN", "Defense", "Detector", "NoDefense", "Preemptive", "Preprocessor", "Wrapper"]
