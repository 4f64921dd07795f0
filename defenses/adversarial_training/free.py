"""Free adversarial training (Shafahi et al. 2019)."""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from harness.core.errors import UsageError
from harness.core.geometry import ascent_direction, flat_norm
from harness.core.registry import RECIPES

from .loop import EarlyStopping, Recipe, check_budget, check_steps, early_stopping_of

# ---------------------------------------------------------------------------------------------------------------
# Free adversarial training (Shafahi et al. 2019)


def clip_ball(delta: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """Proj_{B_eps(0)}(delta): clip to [-eps, eps] (Linf) or rescale to norm eps (L2)."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    n = flat_norm(delta, "l2").view(-1, *[1] * (delta.dim() - 1))
    return delta * torch.clamp(eps / (n + 1e-12), max=1.0)


class FreeTraining(Recipe):
    """Shafahi et al., "Adversarial training for free!", NeurIPS 2019, Algorithm 1 (the slides' "Free adversarial
    training"): each minibatch is replayed m times; each replay is one forward and one backward at x + delta that
    give both g_theta = grad_theta l(x + delta, y) and g_delta = grad_delta l(x + delta, y), then
        theta <- theta - lr g_theta (the SGD step),   delta <- clip_eps(delta + alpha sign(g_delta)),  alpha = eps.
    delta starts at 0 and is carried across replays and minibatches (one tensor of the batch size; a smaller last
    minibatch takes its first rows); the input is clamp(x + delta, 0, 1), as in their code.  Everything runs in
    train mode (one pass serves both).  ``epochs`` are divided by m (ceil(epochs / m) passes), as in the paper, so
    the weight updates and the passes match those of ``epochs`` of standard training."""

    name = "free"

    def __init__(self, norm: str = "linf", eps: float = 0.1, m: int = 4, alpha: float | None = None,
                 early_stop: EarlyStopping | None = None):
        super().__init__(early_stop)
        self.norm, self.eps, self.m = norm, float(eps), int(m)
        self.alpha = self.eps if alpha is None else float(alpha)
        self.replays = self.m
        self.delta: torch.Tensor | None = None

    def passes(self, epochs: int) -> int:
        return math.ceil(epochs / self.m)

    def prepare(self, model, x, y, settings):
        self.delta, self._batch_size = None, int(settings["batch_size"])
        return x, y

    def update(self, model, x, y, opt):
        n = len(x)
        if self.delta is None or len(self.delta) < n:  # zeros of the batch size, made on the first minibatch
            self.delta = torch.zeros(max(n, getattr(self, "_batch_size", n)), *x.shape[1:], device=x.device,
                                     dtype=x.dtype)
        self.delta = self.delta.to(x.device)  # a no-op but after a resumed checkpoint (read on the CPU)
        model.train()
        delta = self.delta[:n].clone().requires_grad_(True)
        loss = F.cross_entropy(model((x + delta).clamp(0, 1)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # one backward: the weights' gradient and delta's
        with torch.no_grad():
            self.delta[:n] = clip_ball(delta.detach() + self.alpha * ascent_direction(delta.grad, self.norm),
                                       self.norm, self.eps)
        opt.step()
        return loss.detach()

    def state_dict(self) -> dict:
        """delta, carried across minibatches and epochs: a resumed training goes on with it."""
        return {"delta": self.delta}

    def load_state_dict(self, state: dict) -> None:
        self.delta = state["delta"]


@RECIPES.register("free", "Free adversarial training (Shafahi et al. 2019): m replays per minibatch, one backward for weights and delta",
                  paper={"m": "8 (CIFAR), 4 (ImageNet)", "alpha": "eps"})
def free_at(norm: Literal["linf", "l2"] = "linf", eps: float = 0.1, m: int = 4, alpha: float | None = None,
            early_stop: bool = False, val: float = 0.1) -> FreeTraining:
    """Shafahi et al. 2019, Algorithm 1: m replays of each minibatch, theta and delta updated from one backward,
    delta <- clip_eps(delta + alpha sign(g_delta)) carried across minibatches; epochs divided by m (``FreeTraining``)."""
    check_budget(norm, eps)
    if int(m) != m or m < 1:
        raise UsageError(f"free: m (replays per minibatch) must be an integer >= 1, got {m}")
    check_steps("free", 1, alpha)
    return FreeTraining(norm, eps, int(m), alpha, early_stopping_of(early_stop, norm, eps, val))


