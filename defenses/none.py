"""The ``none`` defense: the bare classifier (the baseline row of every table)."""
from __future__ import annotations

from harness.core.defense import Defense
from harness.core.registry import DEFENSES


@DEFENSES.register("none", "no defense: the bare classifier")
class NoDefense(Defense):
    pass
