"""SmoothAdv PGD (Salman et al., NeurIPS 2019): PGD on the soft smoothed classifier.

The smoothed classifier g(x) = argmax_c P[f(x + eta) = c] has no useful gradient, so the attack ascends the
cross-entropy of the soft smoothed classifier instead (Salman et al. 2019, SmoothAdv; preemptive paper
eq. 3 and the objective below it):

    maximise  -log G(x')_y,   G(x') = E_eta[softmax(f(x' + eta))] ~ (1/m) sum_i softmax(f(x' + sigma z_i)),
    subject to ||x' - x||_p <= eps,  x' in [0, 1].

Two published sampling schemes, chosen by ``fixed_noise``:

- ``fixed_noise=False`` (default): m fresh draws at every step, from a random start, step eps/4: the
  "T-step randomized PGD" of the preemptive paper (section 3.6, appendix C.2; its code resamples every step)
  and the harness's PGD conventions.  This is the attack behind the preemptive paper's Tables 5-7.
- ``fixed_noise=True``: m draws made once per run and kept for all steps, as in Salman et al.'s
  ``PGD_L2._attack_mutlinoise``.  Their full setting is
  ``--set fixed_noise=true random_start=false alpha=<2*eps/steps>`` (L2).

sigma is read from the smoothed surface the defense hands over (``defense.surface(model, "white-box")`` of
``smoothing``); ``--set sigma=`` smooths any other model with that sigma instead.
"""
from __future__ import annotations

import torch

from harness.core.attack import NO_CONTEXT, Attack, AttackContext
from harness.core.budget import Budget
from harness.core.defense import SoftSmoothed, soft_log_prob
from harness.core.errors import UsageError
from harness.core.geometry import ascent_direction, project, random_in_ball
from harness.core.registry import ATTACKS

from .losses import attack_loss


@ATTACKS.register("pgd_smooth", "SmoothAdv PGD (Salman et al. 2019) on the soft smoothed classifier: m noise draws per step")
class SmoothPGD(Attack):
    """T steps of x <- Proj(x + alpha * dir(grad -log G(x)_y)), G estimated with ``m`` noise draws.

    dir is sign(g) for Linf and g/||g||_2 for L2.  ``restarts``: a sample is attacked again from a new
    random start unless the end point of the previous run already fools the soft smoothed classifier
    estimated with m fresh draws (the harness then judges every sample with the defense's PREDICT).
    No early stopping (Salman et al. run all steps): a noisy estimate of G is no reason to stop.
    """

    def __init__(self, steps: int = 20, alpha: float | None = None, restarts: int = 1, random_start: bool = True,
                 m: int = 8,
                 fixed_noise: bool = False, sigma: float | None = None, threat: str | None = None):
        if steps < 1 or restarts < 1 or m < 1:
            raise UsageError("pgd_smooth: steps, restarts and m must be >= 1")
        if sigma is not None and not sigma > 0:
            raise UsageError(f"pgd_smooth: sigma must be > 0, got {sigma}")
        self.steps, self.alpha, self.restarts, self.random_start = int(steps), alpha, int(restarts), random_start
        self.m, self.fixed_noise, self.sigma, self.threat = int(m), fixed_noise, sigma, threat

    def step_size(self, budget: Budget) -> float:
        return budget.eps / 4 if self.alpha is None else float(self.alpha)

    def _smoothed(self, model) -> tuple[torch.nn.Module, float]:
        """(base classifier, sigma): from a smoothed surface, or ``model`` itself with the ``sigma`` parameter."""
        base, sigma = model, self.sigma
        if isinstance(model, SoftSmoothed):  # the white-box surface of the smoothing defense
            base, sigma = model.base, (model.sigma if self.sigma is None else self.sigma)
        if sigma is None:
            raise UsageError("pgd_smooth: the defense hands over no smoothed classifier; give the noise level with --set sigma=...")
        return base, float(sigma)

    def perturb(self, model, x: torch.Tensor, y: torch.Tensor, budget: Budget,
                context: AttackContext = NO_CONTEXT) -> torch.Tensor:
        base, sigma = self._smoothed(model)
        x = x.detach()
        x_out = x.clone()
        todo = torch.ones(len(x), dtype=torch.bool, device=x.device)
        for r in range(self.restarts):
            idx = todo.nonzero().flatten()
            if idx.numel() == 0:
                break
            x_adv = self._run(base, sigma, x[idx], y[idx], budget)
            x_out[idx] = x_adv
            if r + 1 < self.restarts:
                with torch.no_grad():
                    fooled = soft_log_prob(base, x_adv, sigma, self.m).argmax(1) != y[idx]
                todo[idx[fooled]] = False
        return x_out

    def _run(self, base, sigma: float, x0: torch.Tensor, y: torch.Tensor, budget: Budget) -> torch.Tensor:
        """One run: random start (optional), then ``steps`` ascent steps on -log G(x)_y (summed over the batch)."""
        norm, eps, step_size = budget.norm, budget.eps, self.step_size(budget)
        x_adv = (x0 + random_in_ball(x0, norm, eps)).clamp(0, 1) if self.random_start else x0.clone()
        z = torch.randn((self.m, *x0.shape), device=x0.device, dtype=x0.dtype) if self.fixed_noise else None
        for _ in range(self.steps):
            xa = x_adv.detach().requires_grad_(True)
            loss = attack_loss(soft_log_prob(base, xa, sigma, self.m, z), y, "ce")
            (g,) = torch.autograd.grad(loss, xa)
            with torch.no_grad():
                x_adv = project(xa + step_size * ascent_direction(g, norm), x0, norm, eps)
        return x_adv.detach()
