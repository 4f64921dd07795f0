"""Expectation over Transformation (Athalye, Engstrom, Ilyas & Kwok, ICML 2018; Athalye et al. 2018, sec. 4.1).

``eot`` turns a gradient attack into its EOT version against a randomized defense: the inner attack is handed
``EOTModel(surface, K)`` instead of the random surface, a module whose forward averages the class
probabilities over K independent draws of the surface's randomness and returns their log:

    EOTModel(x) = log( (1/K) sum_k softmax(s_k(x)) ),   s_k = the surface with its k-th random draw.

What is averaged, and why (the three usual choices differ):
- probabilities (this module): the inner loss becomes the cross-entropy of the expected classifier
  E_t[softmax(f(t(x)))] (for Gaussian noise this is Salman et al.'s soft smoothed classifier G), and
  grad EOTModel(x)_y = E_k[grad p_k,y] / E_k[p_k,y], so a sign (Linf) or normalised (L2) step of the CE
  ascent goes exactly along -E_k[grad p_k,y], the mean of the per-draw gradients of -p_y (tested).  Composes: EOT with K
  draws over a soft smoothed surface with m draws is the soft smoothed classifier with K*m draws.
- logits (mean of s_k): a logit ensemble; the loss no longer refers to any draw's prediction.
- losses (Athalye's E_t[grad loss], AutoAttack's eot_iter): needs the attack's loss inside the average, so
  it cannot be done by a model wrapper for a loss the wrapper does not see; it differs from the
  probability average only by per-draw weights p_k,y / sum_j p_j,y on the per-draw CE gradients.
The K draws are K separate calls of the surface (not one call on the batch repeated K times): a random
preprocessor may draw one transformation per call, which a repeated batch would share.
"""
from __future__ import annotations

import math
import torch
import torch.nn.functional as F
from torch import nn

from harness.core.attack import NO_CONTEXT, Attack, AttackContext
from harness.core.budget import Budget
from harness.core.errors import UsageError
from harness.core.geometry import NORMS
from harness.core.registry import ATTACKS, Part


class EOTModel(nn.Module):
    """log of the mean softmax of ``surface`` over ``samples`` independent calls (each with fresh randomness)."""

    def __init__(self, surface: nn.Module, samples: int):
        super().__init__()
        self.surface, self.samples = surface, int(samples)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logp = torch.stack([F.log_softmax(self.surface(x), dim=1) for _ in range(self.samples)])
        return torch.logsumexp(logp, dim=0) - math.log(self.samples)


@ATTACKS.register("eot", "EOT (Athalye et al. 2018) version of a gradient attack: the inner attack sees the mean softmax over `samples` draws")
class EOT(Attack):
    """Run the attack ``inner`` (a part: pgd, pgd_linf, pgd_l2, fgsm, ...) on ``EOTModel(surface, samples)``.

    The inner attack's parameters are reached by path (``--set eot.inner.steps=40``).  Its early stop is off by
    default (``Part`` default ``early_stop=False``): the inner attack's success check sees only a K-draw estimate,
    and the harness judges each adversarial image by classifying it ``--passes`` times with the randomized defense.
    """

    norms = NORMS
    gradients = "expectation"  # harness.flags: the gradient of the expectation over draws (bpda-eot-stronger)

    def __init__(self, inner: Attack = Part("attacks", "pgd", early_stop=False), samples: int = 10,
                 threat: str | None = None):
        inner = inner.build() if isinstance(inner, Part) else inner
        if isinstance(inner, EOT):
            raise UsageError("eot: the inner attack cannot be eot itself")
        if samples < 1:
            raise UsageError(f"eot: samples must be >= 1, got {samples}")
        if inner.adaptive:
            raise UsageError(f"eot: the inner attack {type(inner).__name__} is adaptive; EOT wraps plain gradient attacks")
        self.inner, self.samples, self.threat = inner, int(samples), threat

    def supports(self, budget: Budget) -> Budget:
        """The budget if this attack and its inner attack work in its norm."""
        return self.inner.supports(super().supports(budget))

    def perturb(self, model, x: torch.Tensor, y: torch.Tensor, budget: Budget,
                context: AttackContext = NO_CONTEXT) -> torch.Tensor:
        return self.inner.perturb(EOTModel(model, self.samples), x, y, budget)
