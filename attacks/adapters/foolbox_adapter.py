"""The Foolbox adapter (``fb.<Class>``; ``attacks.adapters``): ``attack(fb.PyTorchModel(model, bounds=(0, 1)), x, y,
epsilons=[eps])``, numpy's generator seeded from torch's for the call."""
from __future__ import annotations

import inspect
import math
from typing import Any

import numpy as np
import torch

from harness.core.attack import NO_CONTEXT, AttackContext
from harness.core.budget import Budget
from harness.core.errors import UsageError
from harness.core.geometry import NORMS

from ..autoattack import draw_seed
from .library import LibraryAttack, _device, _Forward, _import


class FoolboxAttack(LibraryAttack):
    """A Foolbox attack: ``FoolboxAttack("LinfPGD", steps=20, abs_stepsize=0.025)``; the budget comes with each call.
    The Foolbox object is built once per norm (its ``distance`` or ``constraint``), the first at construction so that
    a bad parameter is a usage error before the run starts."""

    library = "foolbox"
    prefix = "fb."

    def __init__(self, name: str, **kw):
        super().__init__(name, **kw)
        self._attacks = {self.norms[0]: self._build(self.norms[0])}

    @classmethod
    def class_norms(cls, peer) -> tuple[str, ...]:
        params = inspect.signature(peer.__init__).parameters
        if "distance" in params or "constraint" in params:
            return NORMS
        distance = None
        try:
            distance = peer().distance
        except Exception:  # noqa: BLE001 - needs arguments, or has no distance: look at the class
            for k in peer.__mro__:
                if "distance" in k.__dict__ and not isinstance(k.__dict__["distance"], property):
                    distance = k.__dict__["distance"]
                    break
        p = getattr(distance, "p", None)
        if p is None:
            return NORMS
        if p == math.inf:
            return ("linf",)
        if p == 2:
            return ("l2",)
        raise UsageError(f"fb.{peer.__name__} works in the L{p:g} norm; the harness budgets are linf or l2")

    def _build(self, norm: str):
        fb = _import("foolbox")
        kwargs = dict(self.params)
        params = inspect.signature(self._cls.__init__).parameters
        if "distance" in params:
            kwargs["distance"] = {"linf": fb.distances.linf, "l2": fb.distances.l2}[norm]
        if "constraint" in params and "constraint" not in self.params:
            kwargs["constraint"] = norm
        try:
            return self._cls(**kwargs)
        except (TypeError, ValueError, AssertionError) as err:
            raise UsageError(f"fb.{self.name}: {err}") from None

    def perturb(self, model, x: torch.Tensor, y: torch.Tensor, budget: Budget,
                context: AttackContext = NO_CONTEXT) -> torch.Tensor:
        fb = _import("foolbox")
        x_in = x.detach()
        if len(x_in) == 0:
            return x_in.clone()
        device = _device(model, x_in)
        x, y = x_in.to(device), y.detach().to(device)
        module = _Forward(model)
        criterion: Any = y
        if self.targeted:
            with torch.no_grad():
                logits = model(x)
            if self.target == "least":
                t = logits.argmin(1)
            else:
                t = (y + torch.randint(1, logits.shape[1], y.shape, device=y.device)) % logits.shape[1]
            criterion = fb.criteria.TargetedMisclassification(t)
        fmodel = fb.PyTorchModel(module, bounds=(0, 1), device=device)
        with torch.random.fork_rng(devices=[]):  # peeked, not consumed: Foolbox's own draws stay as if called directly
            numpy_seed = draw_seed()
        state = np.random.get_state()
        np.random.seed(numpy_seed)
        try:
            if budget.norm not in self._attacks:
                self._attacks[budget.norm] = self._build(budget.norm)
            _, clipped, _ = self._attacks[budget.norm](fmodel, x, criterion, epsilons=[budget.eps])
        finally:
            np.random.set_state(state)
        return self.finish(clipped[0], x_in, budget)
