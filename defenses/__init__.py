"""Defenses.  Each module registers its defenses (and training recipes) on import; the four kinds they implement
are in ``harness.core.defense``."""
from . import (  # noqa: F401 - register
    a5,
    adversarial_training,
    defense_gan,
    magnet,
    none,
    ood,
    preempt,
    purifiers,
    recipes,
    safe_spot,
    smoothing,
)
