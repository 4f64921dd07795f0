"""Adaptive PGD against a detector defense: misclassify the input AND keep the detector's score above its threshold.

The lecture's adaptive attack on MagNet (Carlini & Wagner 2017, "MagNet and 'Efficient defenses...' are not
robust"): minimise ||x' - x||^2 + c * L_c(x') + d * L_d(x') with L_d(x') = max(D(x') - tau, 0) for a detector
D that flags large values.  In the harness's PGD form (budget ball instead of the distance term) and with the
Detector contract (score s: higher = in-distribution, rejected when s < tau), PGD ASCENDS

    L(x) = l_cls(x, y) - lambda * max(tau + margin - s~(x), 0)

within B_eps(x0) ∩ [0, 1], l_cls = CE (or the CW margin) of the true label, s~ = ``defense.surrogate_score`` (a
differentiable stand-in for the score: MSP itself for ``msp_detector``; for ``safe_spot_ood`` the score with the
safe-spot/adversarial displacement x_a* - x held constant, a straight-through/BPDA estimate).  The hinge stops
pushing the score once the input would be accepted.  All ``steps`` steps run (no early stop: a detector score can
be random, as the safe-spot score is, so an iterate that barely passes may not pass when judged); every iterate is
checked (prediction != y and s~ >= tau) and, per sample, the passing iterate with the HIGHEST surrogate score is
returned, else the last iterate.  ``restarts`` reruns the samples that never passed from new random starts.
Against a defense without ``surrogate_score`` (no detector, e.g. "none") it is the plain PGD of ``attacks.pgd``.
Default lambda = 1: on digits_cnn_spgd_adv (first 60 digits test images, Linf 0.1, seed 0, rejection counted as
defended), lambda in {0, 1, 10, 100} left 86.7 / 85.0 / 91.7 / 91.7% robust against ``msp_detector`` and
76.7 / 80.0 / 85.0 / 85.0% against ``safe_spot_ood(method=pgd)``, plain PGD-20 91.7% against both: a large lambda
lets the detector term swamp the classification term; 1 is the best for MSP and close to the best (0) for D.
"""
from __future__ import annotations

from typing import Literal

import torch

from harness.core.attack import NO_CONTEXT, AttackContext
from harness.core.budget import Budget
from harness.core.defense import Detector
from harness.core.errors import UsageError
from harness.core.geometry import ascent_direction, project, random_in_ball
from harness.core.registry import ATTACKS

from .losses import attack_loss
from .pgd import PGD


@ATTACKS.register("pgd_detector", "adaptive PGD on a detector (C&W's MagNet attack in PGD form): CE - lambda * "
                                  "max(tau + margin - score, 0)")
class DetectorPGD(PGD):
    adaptive = True

    def __init__(self, steps: int = 20, alpha: float | None = None, random_start: bool = True, restarts: int = 1,
                 loss: Literal["ce", "cw"] = "ce", lam: float = 1.0, margin: float = 0.0, threat: str | None = None):
        super().__init__(steps=steps, alpha=alpha, random_start=random_start, restarts=restarts,
                         loss=loss, early_stop=True, threat=threat)
        if lam < 0:
            raise UsageError(f"pgd_detector: lam must be >= 0, got {lam}")
        self.lam, self.margin = float(lam), float(margin)

    def perturb(self, model, x: torch.Tensor, y: torch.Tensor, budget: Budget,
                context: AttackContext = NO_CONTEXT) -> torch.Tensor:
        defense = context.defense
        if not isinstance(defense, Detector):  # no detector: plain PGD on the classifier
            return PGD.perturb(self, model, x, y, budget)
        clf = context.classifier if context.classifier is not None else model
        norm, eps, step_size = budget.norm, budget.eps, self.step_size(budget)
        tau = defense.tau if defense.tau is not None else defense.calibrate(clf)

        def forward(xa):  # (logits, score), in one pass where the defense shares the work (MagNet: ae(x) once)
            parts = defense.attack_parts(clf, xa)
            return parts if parts is not None else (model(xa), defense.surrogate_score(clf, xa))

        x = x.detach()
        x_out = x.clone()
        best = torch.full((len(x),), float("-inf"), device=x.device)  # surrogate score of the kept passing iterate
        for _ in range(max(self.restarts, 1)):
            todo = (best == float("-inf")).nonzero().flatten()
            if todo.numel() == 0:
                break
            x0, y0 = x[todo], y[todo]
            xa = (x0 + random_in_ball(x0, norm, eps)).clamp(0, 1) if self.random_start else x0.clone()
            for step in range(self.steps + 1):
                xa = xa.detach().requires_grad_(True)
                logits, s = forward(xa)
                with torch.no_grad():  # keep, per sample, the passing iterate with the highest score so far
                    better = (logits.argmax(1) != y0) & (s >= tau) & (s > best[todo])
                    x_out[todo[better]] = xa[better].detach()
                    best[todo[better]] = s[better].detach().to(best.dtype)
                if step == self.steps:
                    break
                total = attack_loss(logits, y0, self.loss) - self.lam * torch.relu(tau + self.margin - s).sum()
                (g,) = torch.autograd.grad(total, xa)
                with torch.no_grad():
                    xa = project(xa + step_size * ascent_direction(g, norm), x0, norm, eps)
            rest = best[todo] == float("-inf")
            x_out[todo[rest]] = xa[rest].detach()
        return x_out
