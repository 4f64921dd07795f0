"""FGSM adversarial training (Goodfellow et al. 2015) and Fast adversarial training (Wong, Rice & Kolter 2020)."""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from attacks.pgd import pgd
from harness.core.errors import UsageError
from harness.core.registry import RECIPES

from .loop import EarlyStopping, Recipe, check_budget, check_steps, early_stopping_of, step

# ---------------------------------------------------------------------------------------------------------------
# FGSM adversarial training (Goodfellow et al. 2015)


class FGSMTraining(Recipe):
    """Goodfellow, Shlens & Szegedy, "Explaining and harnessing adversarial examples", ICLR 2015, eq. (section 5)
    J~(theta, x, y) = alpha J(theta, x, y) + (1 - alpha) J(theta, x + eps sign(grad_x J(theta, x, y)), y)
    (the slides' "FGSM adversarial training" objective; the paper's alpha = 0.5).

    The FGSM image is Proj_{[0,1]}(x + eps sign(grad_x CE(model(x), y))), computed in eval mode from the current
    weights (``fit``'s convention for attacks); the loss is the mixture above in train mode.  ``random_init``
    starts the FGSM step from x + U(-eps, eps) and projects onto B_eps(x) (the random initialisation of Wong et
    al. 2020, at step eps); off by default, plain FGSM-AT, which overfits catastrophically (Wong et al. 2020,
    section 4: robust to FGSM, not to PGD)."""

    name = "fgsm"

    def __init__(self, norm: str = "linf", eps: float = 0.1, alpha: float = 0.5, random_init: bool = False,
                 early_stop: EarlyStopping | None = None):
        super().__init__(early_stop)
        self.norm, self.eps, self.alpha, self.random_init = norm, float(eps), float(alpha), bool(random_init)
        self.batch_fn = self.alpha == 0.0

    def adversary(self, model, x, y) -> torch.Tensor:
        return pgd(model, x, y, norm=self.norm, eps=self.eps, steps=1, alpha=self.eps, random_start=self.random_init)

    def make_batch(self, model, x, y):
        if self.alpha != 0.0:
            return super().make_batch(model, x, y)
        return self.adversary(model, x, y)

    def loss(self, model, x, x_adv, y) -> torch.Tensor:
        logits = model(torch.cat([x, x_adv]))
        n = len(x)
        return self.alpha * F.cross_entropy(logits[:n], y) + (1 - self.alpha) * F.cross_entropy(logits[n:], y)

    def update(self, model, x, y, opt):
        if self.alpha == 0.0:  # CE on the FGSM images alone: fit's step
            return super().update(model, x, y, opt)
        model.eval()
        x_adv = self.adversary(model, x, y).detach()
        model.train()
        return step(opt, self.loss(model, x, x_adv, y))


@RECIPES.register("fgsm", "FGSM adversarial training (Goodfellow et al. 2015): alpha CE(x) + (1-alpha) CE(FGSM(x))",
                  paper={"alpha": "0.5", "random_init": "false"})
def fgsm_at(norm: Literal["linf", "l2"] = "linf", eps: float = 0.1, alpha: float = 0.5, random_init: bool = False,
            early_stop: bool = False, val: float = 0.1) -> FGSMTraining:
    """Goodfellow et al. 2015, section 5: alpha * CE(x) + (1 - alpha) * CE(x + eps sign(grad_x CE(x)))
    (``FGSMTraining``); ``random_init``: FGSM from a uniform random start (off: plain FGSM-AT);
    ``early_stop``/``val``: Rice et al. 2020 (``EarlyStopping``)."""
    check_budget(norm, eps)
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"fgsm: alpha (the weight of the clean loss) must be in [0, 1], got {alpha}")
    return FGSMTraining(norm, eps, alpha, random_init, early_stopping_of(early_stop, norm, eps, val))


# ---------------------------------------------------------------------------------------------------------------
# Fast adversarial training (Wong, Rice & Kolter 2020)


class FastTraining(Recipe):
    """Wong, Rice & Kolter, "Fast is better than free: revisiting adversarial training", ICLR 2020, Algorithm 3
    (the slides' "Fast adversarial training"):
        delta ~ U(-eps, eps);  delta <- Proj_{B_eps(0)}(delta + alpha sign(grad_delta l(x + delta, y)));
        theta <- theta - lr grad_theta l(x + delta, y),  alpha = 1.25 eps,
    with x + delta kept in [0, 1] (their code clamps delta to [0 - x, 1 - x]).  One PGD step from a random start
    (``attacks.pgd.pgd``, steps=1), then CE on it: a ``fit`` batch function.  Their cyclic learning rate and mixed
    precision are not reproduced (``fit``'s cosine schedule)."""

    name = "fast"
    batch_fn = True

    def __init__(self, norm: str = "linf", eps: float = 0.1, alpha: float | None = None,
                 early_stop: EarlyStopping | None = None):
        super().__init__(early_stop)
        self.norm, self.eps = norm, float(eps)
        self.alpha = 1.25 * self.eps if alpha is None else float(alpha)

    def make_batch(self, model, x, y):
        return pgd(model, x, y, norm=self.norm, eps=self.eps, steps=1, alpha=self.alpha, random_start=True)


@RECIPES.register("fast", "Fast adversarial training (Wong, Rice & Kolter 2020): FGSM from a uniform random start, step 1.25 eps",
                  paper={"alpha": "1.25 eps"})
def fast_at(norm: Literal["linf", "l2"] = "linf", eps: float = 0.1, alpha: float | None = None,
            early_stop: bool = False, val: float = 0.1) -> FastTraining:
    """Wong et al. 2020, Algorithm 3: delta ~ U(B_eps), delta <- Proj(delta + alpha sign(grad)), train on x + delta;
    ``alpha`` default 1.25 eps (``FastTraining``)."""
    check_budget(norm, eps)
    check_steps("fast", 1, alpha)
    return FastTraining(norm, eps, alpha, early_stopping_of(early_stop, norm, eps, val))


