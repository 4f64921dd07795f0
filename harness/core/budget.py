"""The budget of a threat model as a value: ``Budget(norm, eps)``, the ball B_eps(c) in ``norm``.

Foolbox 3's style: a budget is an argument of each call (``attack.perturb(model, x, y, budget, context)``), never
state of an attack, so one attack object serves every budget of a run and the adaptive attack's eps' sweep
(``budget.scaled(f)``).  A defense whose parameters follow the budget declares them (``Defense.follows_budget``)
and is configured per budget by the engine.  Imports nothing of the project outside ``harness.core``.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError
from .geometry import NORMS


@dataclass(frozen=True)
class Budget:
    """The ball B_eps(c) ∩ [0, 1] in ``norm`` ("linf" or "l2") around the point an attack is handed."""

    norm: str
    eps: float

    def __post_init__(self):
        norm = str(self.norm).lower()
        if norm not in NORMS:
            raise UsageError(f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if not self.eps >= 0:
            raise UsageError(f"eps must be >= 0, got {self.eps}")
        object.__setattr__(self, "norm", norm)
        object.__setattr__(self, "eps", float(self.eps))

    def scaled(self, factor: float) -> "Budget":
        """The budget of radius ``factor * eps`` in the same norm (the adaptive attack's eps' = f eps)."""
        return Budget(self.norm, factor * self.eps)
