"""TRADES (Zhang et al. 2019)."""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from harness.core.errors import UsageError
from harness.core.geometry import ascent_direction, project
from harness.core.registry import RECIPES

from .loop import EarlyStopping, Recipe, check_budget, check_steps, early_stopping_of, step

# ---------------------------------------------------------------------------------------------------------------
# TRADES (Zhang et al. 2019)


def kl_rows(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row from log-probabilities."""
    return (log_p.exp() * (log_p - log_q)).sum(1)


class TradesTraining(Recipe):
    """Zhang et al., "Theoretically principled trade-off between robustness and accuracy", ICML 2019, eq. (5) and
    Algorithm 1:
        min_theta E[ CE(f(x), y) + beta max_{x' in B_eps(x)} KL(f(x) || f(x')) ],
    f the softmax.  The inner maximisation as in their code: x' = x + 0.001 N(0, I), then ``steps`` steps
    x' <- Proj_{B_eps(x) ∩ [0,1]}(x' + alpha sign(grad_x' KL(f(x) || f(x')))) in eval mode (f(x) fixed); the loss in
    train mode with KL(f(x) || f(x')) averaged over the batch, both sides differentiated.  Paper (CIFAR-10):
    beta = 6, 10 steps of about eps/4 (0.007 at eps 0.031).  L2: normalised-gradient steps."""

    name = "trades"

    def __init__(self, norm: str = "linf", eps: float = 0.1, beta: float = 6.0, steps: int = 10,
                 alpha: float | None = None, early_stop: EarlyStopping | None = None):
        super().__init__(early_stop)
        self.norm, self.eps, self.beta, self.steps = norm, float(eps), float(beta), int(steps)
        self.alpha = self.eps / 4 if alpha is None else float(alpha)

    def adversary(self, model, x, start: torch.Tensor | None = None) -> torch.Tensor:
        """argmax_{x' in B_eps(x)} KL(f(x) || f(x')) by ``steps`` signed-gradient steps from ``start``
        (default x + 0.001 N(0, I))."""
        with torch.no_grad():
            log_p = F.log_softmax(model(x), 1)
        xa = (x + 0.001 * torch.randn_like(x)) if start is None else start.clone()
        for _ in range(self.steps):
            xa = xa.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(kl_rows(log_p, F.log_softmax(model(xa), 1)).sum(), xa)
            with torch.no_grad():
                xa = project(xa + self.alpha * ascent_direction(g, self.norm), x, self.norm, self.eps)
        return xa.detach()

    def loss(self, model, x, x_adv, y) -> torch.Tensor:
        logits = model(x)
        log_q = F.log_softmax(model(x_adv), 1)
        return F.cross_entropy(logits, y) + self.beta * kl_rows(F.log_softmax(logits, 1), log_q).mean()

    def update(self, model, x, y, opt):
        model.eval()
        x_adv = self.adversary(model, x)
        model.train()
        return step(opt, self.loss(model, x, x_adv, y))


@RECIPES.register("trades", "TRADES (Zhang et al. 2019): CE(f(x), y) + beta KL(f(x) || f(x')), x' by PGD on the KL",
                  paper={"beta": "6", "steps": "10", "alpha": "eps/4 (0.007 at 8/255)"})
def trades(norm: Literal["linf", "l2"] = "linf", eps: float = 0.1, beta: float = 6.0, steps: int = 10,
           alpha: float | None = None, early_stop: bool = False, val: float = 0.1) -> TradesTraining:
    """Zhang et al. 2019, eq. (5): CE(f(x), y) + beta * KL(f(x) || f(x')), x' from ``steps`` PGD steps of ``alpha``
    (default eps/4) maximising the KL (``TradesTraining``)."""
    check_budget(norm, eps)
    if not (beta >= 0 and math.isfinite(beta)):
        raise UsageError(f"trades: beta must be >= 0, got {beta}")
    check_steps("trades", steps, alpha)
    return TradesTraining(norm, eps, beta, int(steps), alpha, early_stopping_of(early_stop, norm, eps, val))


