"""Training recipes of the classifier: standard training and PGD adversarial training (the ADV baseline of the papers).

A recipe turns a clean batch into the batch the model is trained on (``harness.core.training.fit`` is the loop).
Other defense modules add theirs: preemptively robust training (``preempt``), Gaussian augmentation
(``smoothing``), safe-spot-aware training (``safe_spot``).
"""
from __future__ import annotations

from typing import Literal

from attacks.pgd import pgd
from harness.core.registry import RECIPES
from harness.core.training import BatchFn, StatefulBatch, eps_ramp

from .adversarial_training import with_early_stopping


@RECIPES.register("standard", "plain cross-entropy training on clean images")
def standard() -> BatchFn:
    return lambda model, x, y: x


@RECIPES.register("pgd", "PGD adversarial training (Madry et al. 2018; the ADV model of the papers)")
def pgd_at(norm: Literal["linf", "l2"] = "linf", eps: float = 0.1, steps: int = 10, alpha: float | None = None,
           ramp: int = 0, early_stop: bool = False, val: float = 0.1) -> BatchFn:
    """Train on K-step PGD examples (random start, step eps/4 by default, as in appendix C.1); ``ramp``: batches
    over which the budget warms up linearly from 0 (``eps_ramp``, checkpointed with the training).  ``early_stop``: keep the epoch with the best
    PGD accuracy on ``val`` of the split held out (Rice et al. 2020; ``adversarial_training.EarlyStopping``)."""
    budget = eps_ramp(eps, ramp)

    def make_batch(model, x, y):
        e = budget()
        return pgd(model, x, y, norm=norm, eps=e, steps=steps, alpha=None if alpha is None else alpha * e / eps)

    make_batch = StatefulBatch(make_batch, budget)
    return with_early_stopping(make_batch, norm=norm, eps=eps, val=val) if early_stop else make_batch
