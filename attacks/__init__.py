"""Attacks.  Each module registers its attacks in ``harness.ATTACKS`` on import."""
from . import adapters, adaptive, autoattack, bpda, detector_pgd, eot, magnet_cw, pgd, smooth_pgd  # noqa: F401 - register
from .base import Attack, flat_norm, project

__all__ = ["Attack", "flat_norm", "project"]
