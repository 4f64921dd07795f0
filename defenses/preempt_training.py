"""Preemptively robust training (Moon, An & Song, AAAI 2022, Algorithm 2): the recipe ``preempt-robust`` that
trains a classifier on the PGD adversarial examples of preemptively robustified images (the zoo's
``*_cnn_preempt`` entries)."""
from __future__ import annotations

from typing import Literal

import torch

from attacks.pgd import PGD
from harness.core.budget import Budget
from harness.core.geometry import ascent_direction, project, random_in_ball
from harness.core.registry import RECIPES
from harness.core.training import StatefulBatch, eps_ramp

from .preempt import ce_grad


@RECIPES.register("preempt-robust", "preemptively robust training (Moon et al. AAAI 2022, Algorithm 2)")
def preempt_robust(norm: Literal["linf", "l2"] = "linf", eps: float = 0.1, delta: float | None = None,
                   beta: float | None = None, defense_steps: int = 1, steps: int = 10, alpha: float | None = None,
                   ramp: int = 0):
    """Algorithm 2: x_r = L steps (L = ``defense_steps``) of PGD DOWN the loss within B_delta(x_o) from a random
    start, step beta (default delta = eps: "beta during model training = eps", appendix C.1); then K = ``steps``
    steps of PGD UP from x_r + eta within B_eps(x_r) (step alpha = eps/4); train on the result.

    Ground-truth labels (section 3.5).  Code-vs-paper: the official ``train.py`` calls its PGD for the first stage
    with ``targeted=False``, i.e. it ASCENDS the loss (docs/REFERENCE-IMPLEMENTATIONS.md section 1, Algorithm 2
    pitfall); we follow the paper's Algorithm 2 and descend.  For L2 the step direction is g/||g||_2.
    ``ramp``: batches over which eps, delta, beta and alpha warm up linearly from 0 (``recipes.eps_ramp``).
    """

    delta = eps if delta is None else delta
    beta = delta if beta is None else beta
    budget = eps_ramp(eps, ramp)

    def make_batch(model, x, y):
        f = budget() / eps  # 1 after the warm-up
        x_r = (x + random_in_ball(x, norm, f * delta)).clamp(0, 1)
        for _ in range(defense_steps):
            _, g = ce_grad(model, x_r, y)
            with torch.no_grad():
                x_r = project(x_r - f * beta * ascent_direction(g, norm), x, norm, f * delta)
        attack = PGD(steps=steps, alpha=None if alpha is None else f * alpha, early_stop=False)
        return attack.iterate(model, x_r.detach(), y, Budget(norm, f * eps))

    return StatefulBatch(make_batch, budget)
