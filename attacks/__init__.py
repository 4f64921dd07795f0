"""Attacks.  Each module registers its attacks in ``harness.ATTACKS`` on import."""
import importlib

from .base import Attack, flat_norm, project

for _module in ("pgd", "autoattack", "adapters", "adaptive", "bpda", "eot", "smooth_pgd"):
    try:
        importlib.import_module(f"{__name__}.{_module}")
    except ModuleNotFoundError as err:  # a module not written yet
        if err.name != f"{__name__}.{_module}":
            raise

__all__ = ["Attack", "flat_norm", "project"]
