"""A run's defenses with the budgets they are evaluated at: the engine's side of ``Defense.follows_budget``.

A defense whose parameters follow the budget (preempt's eps and delta = eps, unless ``--set`` gives them) is
configured per budget: the evaluator asks ``Entrant.at(budget)`` for it, and in a several-eps run each budget gets
its own (built once, on first use).  Any other defense is one object that serves every budget of the run.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from harness.core.budget import Budget
from harness.core.defense import Defense


@dataclass
class Entrant:
    """One defense of a run.  ``budgets``: the run's budgets, in the order given.  ``build(budget)``: the defense
    configured for a budget.  ``per_budget``: whether its parameters follow the budget (then one object per budget
    of a several-eps run; otherwise the defense built for the first budget serves them all)."""

    budgets: list[Budget]
    build: Callable[[Budget], Defense]
    per_budget: bool = False
    _built: dict[Budget, Defense] = field(default_factory=dict, repr=False)

    @classmethod
    def fixed(cls, defense: Defense, budgets: list[Budget]) -> "Entrant":
        """A defense object built elsewhere (the Python API, the tests), evaluated at ``budgets``."""
        return cls(list(budgets), lambda budget: defense)

    def at(self, budget: Budget) -> Defense:
        """The defense for ``budget`` (built on first use)."""
        key = budget if self.per_budget else self.budgets[0]
        if key not in self._built:
            self._built[key] = self.build(key)
        return self._built[key]

    def served(self) -> list[tuple[Defense, list[Budget]]]:
        """Each defense object with the budgets it is evaluated at."""
        if self.per_budget and len(self.budgets) > 1:
            return [(self.at(b), [b]) for b in self.budgets]
        return [(self.at(self.budgets[0]), list(self.budgets))]

    def describe(self) -> dict:
        """The resolved parameters (run.json's config); where one object per budget, those that vary as lists."""
        each = [d.describe() for d, _ in self.served()]
        if len(each) == 1:
            return each[0]
        return {k: [d.get(k) for d in each] if len({repr(d.get(k)) for d in each}) > 1 else each[0].get(k)
                for k in dict.fromkeys(k for d in each for k in d)}
