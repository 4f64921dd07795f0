"""The attack contract (AutoAttack's style: one class per attack, one ``perturb`` entry)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from .errors import UsageError
from .geometry import NORMS


@dataclass
class AttackResult:
    """What an attack hands the evaluator (``Attack.run``).

    ``images``: one adversarial image per sample.  ``candidates``: further image batches (one per eps' of the
    adaptive attack's sweep, say); the evaluator, which knows x_o, then judges each sample by the worst case over
    all of them.  ``points``: named image batches whose distance to x_o the evaluator records (the reconstruction
    x_hat_o, Figure 3 of the preemptive paper).  ``extra``: per-sample numbers to record as they are.
    """

    images: torch.Tensor
    candidates: list[torch.Tensor] = field(default_factory=list)
    points: dict[str, torch.Tensor] = field(default_factory=dict)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


class Attack:
    """An attack with a fixed budget: ``perturb(model, x, y)`` returns adversarial images in [0, 1].

    ``model`` maps [0, 1] images to logits.  Adaptive attacks (``adaptive = True``) also receive the defense
    they attack as ``perturb(model, x, y, defense=...)``.  ``norm``/``eps`` give the budget around the
    point the attack is handed; ``threat`` is the threat model the attack asks for (None: the defense
    kind's default, see ``harness.threat``).
    """

    norms: ClassVar[tuple[str, ...]] = NORMS
    adaptive: ClassVar[bool] = False
    # A certifier makes no adversarial images: its result's ``extra["certified"]`` (1/0 per sample) says which
    # samples are provably robust in the budget around the image it is handed.  Its cells report certified
    # accuracy, stay out of the worst case over the attacks, and bound it from below.
    certifies: ClassVar[bool] = False
    # What the attack asks of the model, for the gradient-masking checks (``harness.flags``): "iterative" gradient
    # steps, one "single-step" gradient step, or "gradient-free" queries of the output.
    gradients: ClassVar[str] = "iterative"
    norm: str = "linf"
    eps: float = 0.0
    threat: str | None = None

    def set_budget(self, norm: str, eps: float) -> None:
        norm = norm.lower()
        if norm not in self.norms:
            raise UsageError(f"{type(self).__name__} supports norms {', '.join(self.norms)}, not {norm!r}")
        if not eps >= 0:
            raise UsageError(f"eps must be >= 0, got {eps}")
        self.norm, self.eps = norm, float(eps)

    def perturb(self, model, x: torch.Tensor, y: torch.Tensor, **kw) -> torch.Tensor:
        raise NotImplementedError

    def run(self, model, x: torch.Tensor, y: torch.Tensor, **kw) -> AttackResult:
        """The evaluator's entry: ``perturb``'s images; an attack with candidates or points returns them here."""
        return AttackResult(self.perturb(model, x, y, **kw))

    def describe(self) -> dict:
        """The attack's resolved parameters (they go in run.json and the config hash); a part's, nested."""
        return {k: v.describe() if isinstance(v, Attack) else v for k, v in vars(self).items()
                if not k.startswith("_") and (_plain(v) or isinstance(v, Attack))}


def _plain(v) -> bool:
    return isinstance(v, (int, float, str, bool, type(None))) or (
        isinstance(v, (tuple, list)) and all(isinstance(i, (int, float, str, bool)) for i in v))
