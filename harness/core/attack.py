"""The attack contract (AutoAttack's style: one class per attack, one ``perturb`` entry; Foolbox 3's: the budget is
an argument of the call, ``perturb(model, x, y, budget, context)``, never state of the attack)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol

import torch

from .budget import Budget
from .errors import UsageError
from .geometry import NORMS

if TYPE_CHECKING:
    from torch import nn

    from .defense import Defense


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


class Referee(Protocol):
    """The evaluator's final word on candidate images (``harness.threat.Referee``)."""

    def settled(self, images: torch.Tensor) -> torch.Tensor:
        """Per sample: ``images`` holds a valid (within the original's budget), misclassified image, so that no
        later candidate can change the sample's verdict.  An attack may use it only to stop working on them."""
        ...


@dataclass(frozen=True)
class AttackContext:
    """What an adaptive attack (``Attack.adaptive``) knows beyond the surface it is handed: the white-box threat model.

    ``defense``: the defense it attacks (its ``reconstruct``, ``approx``, ``surrogate_score``, ``randomized``, ...).
    ``classifier``: the bare classifier; the surface (``model``) is the defended composition the threat model gives.
    ``referee``: which samples a batch of candidates has already decided for good (``Referee``); handed over only
    where the defense is deterministic and not a detector, None elsewhere.
    A plain attack is handed the empty context: it sees the surface and nothing else.
    """

    defense: "Defense | None" = None
    classifier: "nn.Module | None" = None
    referee: Referee | None = None


NO_CONTEXT = AttackContext()


class Attack:
    """An attack: ``perturb(model, x, y, budget, context)`` returns adversarial images in B_eps(x) ∩ [0, 1].

    ``model`` maps [0, 1] images to logits.  ``budget`` (``Budget``: norm and eps) is the ball around the point the
    attack is handed; the attack keeps none of it (one object serves every budget of a run).  Adaptive attacks
    (``adaptive = True``) read the defense and the bare classifier from ``context`` (``AttackContext``).
    ``threat`` is the threat model the attack asks for (None: the defense kind's default, see ``harness.threat``).
    """

    # The norms the attack works in; the run resolves the norm of its budget among them (``supports``).
    norms: ClassVar[tuple[str, ...]] = NORMS
    adaptive: ClassVar[bool] = False
    # A certifier makes no adversarial images: its result's ``extra["certified"]`` (1/0 per sample) says which
    # samples are provably robust in the budget around the image it is handed.  Its cells report certified
    # accuracy, stay out of the worst case over the attacks, and bound it from below.
    certifies: ClassVar[bool] = False
    # What the attack asks of the model, for the gradient-masking checks (``harness.flags``): "iterative" gradient
    # steps, one "single-step" gradient step, or "gradient-free" queries of the output.
    gradients: ClassVar[str] = "iterative"
    threat: str | None = None

    def supports(self, budget: Budget) -> Budget:
        """``budget`` if the attack works in its norm, else a UsageError naming the norms it supports."""
        if budget.norm not in self.norms:
            raise UsageError(f"{type(self).__name__} supports norms {', '.join(self.norms)}, not {budget.norm!r}")
        return budget

    def perturb(self, model, x: torch.Tensor, y: torch.Tensor, budget: Budget,
                context: AttackContext = NO_CONTEXT) -> torch.Tensor:
        raise NotImplementedError

    def run(self, model, x: torch.Tensor, y: torch.Tensor, budget: Budget,
            context: AttackContext = NO_CONTEXT) -> AttackResult:
        """The evaluator's entry: ``perturb``'s images; an attack with candidates or points returns them here."""
        return AttackResult(self.perturb(model, x, y, budget, context))

    def describe(self, budget: Budget | None = None) -> dict:
        """The attack's resolved parameters (they go in run.json's config); a part's, nested.  With a
        ``budget``: at that budget (its norm and eps beside the parameters), and the name it is registered under."""
        out = {k: v.describe(budget) if isinstance(v, Attack) else v for k, v in vars(self).items()
               if not k.startswith("_") and (_plain(v) or isinstance(v, Attack))}
        if budget is not None:
            from .registry import ATTACKS

            out.update(norm=budget.norm, eps=budget.eps)
            name = ATTACKS.name_of(self)
            if name is not None:
                out["registry_name"] = name
        return out


def _plain(v) -> bool:
    return isinstance(v, (int, float, str, bool, type(None))) or (
        isinstance(v, (tuple, list)) and all(isinstance(i, (int, float, str, bool)) for i in v))
