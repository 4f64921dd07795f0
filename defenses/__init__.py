"""Defenses.  Each module registers its defenses in ``harness.DEFENSES`` on import."""
from . import magnet, ood, preempt, purifiers, safe_spot, smoothing  # noqa: F401 - register
from .base import ABSTAIN, Defense, Detector, NoDefense, Preemptive, Preprocessor, Wrapper

__all__ = ["ABSTAIN", "Defense", "Detector", "NoDefense", "Preemptive", "Preprocessor", "Wrapper"]
