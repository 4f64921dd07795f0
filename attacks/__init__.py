"""Attacks.  Each module registers its attacks in ``harness.core.registry.ATTACKS`` on import; the contract they
implement is ``harness.core.attack.Attack``."""
from . import (  # noqa: F401 - register
    adapters,
    adaptive,
    autoattack,
    bpda,
    certifiers,
    detector_pgd,
    eot,
    magnet_cw,
    pgd,
    smooth_pgd,
)
