"""What the adversarial-training loop (``loop.train``) hands back (``Trained``: the model and its cost) and what it
tallies across epochs for its checkpoint (``Books``)."""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from harness.core.counting import PassCounter
from harness.core.resume import Stateful


@dataclass
class Trained:
    """What ``train`` hands back: the model (eval mode; with early stopping, the best epoch's weights) and its cost.

    ``forwards``/``backwards``: per-sample passes through the model in training (the teacher's of ``pseudo-label``
    included, ``extra`` says which); ``eval_*``: those of the held-out evaluation.  ``history``: per epoch (clean,
    robust) held-out accuracy; ``best_epoch`` (1-based) and ``last_state`` (the final weights) with early stopping.
    """

    model: nn.Module
    n_train: int
    epochs: int
    updates: int
    forwards: int = 0
    backwards: int = 0
    eval_forwards: int = 0
    eval_backwards: int = 0
    history: list[tuple[float, float]] = field(default_factory=list)
    best_epoch: int | None = None
    last_state: dict | None = None
    extra: dict = field(default_factory=dict)

    def per_image(self, n: int | None = None) -> tuple[float, float]:
        """Training passes per image of the training split (``n``; default the images trained on)."""
        n = n or self.n_train
        return self.forwards / n, self.backwards / n


class Books(Stateful):
    """What ``train`` tallies across epochs, for its checkpoint: passes so far, early stopping's history and best
    epoch (with its weights)."""

    def __init__(self, result: Trained, counter: PassCounter):
        self.result, self.counter = result, counter
        self.best_robust, self.best_state = -1.0, None

    def state_dict(self) -> dict:
        r = self.result
        return {"counts": list(self.counter.counts), "eval": [r.eval_forwards, r.eval_backwards],
                "history": [list(h) for h in r.history], "best_epoch": r.best_epoch, "best_robust": self.best_robust,
                "best_state": self.best_state}

    def load_state_dict(self, state: dict) -> None:
        r = self.result
        self.counter.forwards, self.counter.backwards = state["counts"]
        r.eval_forwards, r.eval_backwards = state["eval"]
        r.history = [tuple(h) for h in state["history"]]
        r.best_epoch, self.best_robust, self.best_state = state["best_epoch"], state["best_robust"], state["best_state"]
