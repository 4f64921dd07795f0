"""Defenses.  Each module registers its defenses (and training recipes) on import; the four kinds they implement
are in ``harness.core.defense``."""
from . import adversarial_training, magnet, none, ood, preempt, purifiers, recipes, safe_spot, smoothing  # noqa: F401 - register
