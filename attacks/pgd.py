"""Projected gradient descent (Madry et al., ICLR 2018) and FGSM (Goodfellow et al., ICLR 2015).

Batched on the model's device; work stops on every sample as soon as it is misclassified (or reaches its
target), so later steps and restarts only touch the samples still undecided.  The forward pass that gives
each step's gradient also gives its success check: PGD-T costs T forward+backward passes and two plain
forward passes per sample at most (the floor is T forward+backward passes).
"""
from __future__ import annotations

from typing import Literal

import torch

from harness.core.attack import NO_CONTEXT, Attack, AttackContext
from harness.core.budget import Budget
from harness.core.geometry import ascent_direction, project, random_in_ball
from harness.core.registry import ATTACKS

from .losses import attack_loss


class PGD(Attack):
    """PGD: T steps x <- Proj_{B_eps(x0) ∩ [0,1]}(x + alpha * dir(grad loss)) from a random start.

    dir is sign(g) for Linf and g/||g||_2 for L2 (Madry et al. 2018, eq. 2 and its L2 analogue).
    ``alpha`` defaults to eps/4 (the step of the preemptive and safe-spot papers, appendix C).  ``restarts``
    runs the attack again from new random starts on the samples not yet fooled.  ``targeted``: move towards
    ``target`` ("random" other class or "least" likely class) instead of away from the label.
    ``compile``: run the model's forward and backward through ``torch.compile`` ("inductor"; "cudagraphs" for CUDA
    graphs of fixed shapes; "aot_eager" traces without code generation).  Opt-in: on this project's CPU the
    inductor-compiled digits CNN took 2x the eager time per step after a 50 s compile; with ``early_stop`` the
    batch shrinks and recompiles, so pair it with ``early_stop=False`` on a GPU.  The result equals the eager one
    where the backend keeps the kernels' order of operations (tested bit for bit with "aot_eager").
    """

    def __init__(self, steps: int = 20, alpha: float | None = None, random_start: bool = True, restarts: int = 1,
                 loss: Literal["ce", "cw", "dlr"] = "ce", targeted: bool = False,
                 target: Literal["random", "least"] = "random", early_stop: bool = True,
                 threat: str | None = None, compile: Literal["none", "inductor", "cudagraphs", "aot_eager"] = "none"):
        self.steps, self.alpha, self.random_start, self.restarts = int(steps), alpha, random_start, int(restarts)
        self.loss, self.targeted, self.target, self.early_stop, self.threat = loss, targeted, target, early_stop, threat
        self.compile = compile
        self._compiled: dict[int, torch.nn.Module] = {}

    def describe(self, budget: Budget | None = None) -> dict:
        """As ``Attack.describe``; ``compile`` only when on (the eager path's config hash stays what it was)."""
        d = super().describe(budget)
        if self.compile == "none":
            d.pop("compile")
        return d

    def compiled(self, model):
        """``model`` through ``torch.compile`` with this attack's backend (one compiled module per model)."""
        if self.compile == "none":
            return model
        if id(model) not in self._compiled:
            self._compiled[id(model)] = torch.compile(model, backend=self.compile, dynamic=False)
        return self._compiled[id(model)]

    def step_size(self, budget: Budget) -> float:
        return budget.eps / 4 if self.alpha is None else float(self.alpha)

    def choose_targets(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.target == "least":
            return logits.argmin(1)
        shift = torch.randint(1, logits.shape[1], y.shape, device=y.device)
        return (y + shift) % logits.shape[1]

    def perturb(self, model, x: torch.Tensor, y: torch.Tensor, budget: Budget,
                context: AttackContext = NO_CONTEXT) -> torch.Tensor:
        x = x.detach()
        with torch.no_grad():
            logits = model(x)
        t = self.choose_targets(logits, y) if self.targeted else None
        todo = ~self._fooled(logits, y, t)
        x_out = x.clone()
        runs = max(self.restarts, 1)
        for r in range(runs):
            idx = todo.nonzero().flatten()
            if idx.numel() == 0:
                break
            x_adv, fooled = self._run(model, x[idx], y[idx], budget, None if t is None else t[idx], check=r < runs - 1)
            x_out[idx] = x_adv
            todo[idx[fooled]] = False
        return x_out

    def iterate(self, model, x0: torch.Tensor, y: torch.Tensor, budget: Budget,
                t: torch.Tensor | None = None) -> torch.Tensor:
        """One run from a random start, the final iterates without a success check: the inner maximisation that
        training recipes and defenses use (with ``early_stop=False``, every sample takes every step)."""
        return self._run(model, x0, y, budget, t, check=False)[0]

    def _fooled(self, logits, y, t):
        pred = logits.argmax(1)
        return pred == t if t is not None else pred != y

    def _run(self, model, x0, y, budget: Budget, t, check: bool = True):
        """One PGD run from a random start: the final iterates, and which of them fool the model (found
        during the steps, plus one forward pass over the rest when ``check``; a last run skips that pass)."""
        model = self.compiled(model)
        norm, eps, step_size = budget.norm, budget.eps, self.step_size(budget)
        x_adv = x0.clone()
        if self.random_start:
            x_adv = (x0 + random_in_ball(x0, norm, eps)).clamp(0, 1)
        if not self.early_stop:  # every sample takes every step: whole-batch tensors, no index copies
            for _ in range(self.steps):
                xa = x_adv.requires_grad_(True)
                (g,) = torch.autograd.grad(attack_loss(model(xa), y, self.loss, t), xa)
                with torch.no_grad():
                    x_adv = project(xa.detach() + step_size * ascent_direction(g, norm), x0, norm, eps)
            with torch.no_grad():
                fooled = self._fooled(model(x_adv), y, t) if check else torch.zeros(len(x0), dtype=torch.bool, device=x0.device)
            return x_adv.detach(), fooled
        active = torch.ones(len(x0), dtype=torch.bool, device=x0.device)
        for _ in range(self.steps):
            ia = active.nonzero().flatten()
            if ia.numel() == 0:
                break
            xa = x_adv[ia].requires_grad_(True)
            logits = model(xa)
            loss = attack_loss(logits, y[ia], self.loss, None if t is None else t[ia])
            (g,) = torch.autograd.grad(loss, xa)
            with torch.no_grad():
                move = torch.ones(len(ia), dtype=torch.bool, device=x0.device)
                if self.early_stop:
                    move = ~self._fooled(logits.detach(), y[ia], None if t is None else t[ia])
                    active[ia[~move]] = False
                im = ia[move]
                step = x_adv[im] + step_size * ascent_direction(g[move], norm)
                x_adv[im] = project(step, x0[im], norm, eps)
        with torch.no_grad():
            fooled = ~active if self.early_stop else torch.zeros_like(active)
            ia = active.nonzero().flatten()
            if check and ia.numel():
                fooled[ia] = self._fooled(model(x_adv[ia]), y[ia], None if t is None else t[ia])
        return x_adv.detach(), fooled


def pgd(model, x: torch.Tensor, y: torch.Tensor, *, norm: str, eps: float, steps: int, alpha: float | None = None,
        random_start: bool = True, loss: str = "ce", target: torch.Tensor | None = None) -> torch.Tensor:
    """``steps`` PGD steps on every sample (no early stop), from a random start in B_eps(x) unless told otherwise;
    towards ``target`` when given.  The function form of ``PGD.iterate``."""
    attack = PGD(steps=steps, alpha=alpha, random_start=random_start, loss=loss, targeted=target is not None,
                 early_stop=False)
    return attack.iterate(model, x, y, Budget(norm, eps), target)


@ATTACKS.register("pgd", "PGD in the norm of --norm (Madry et al. 2018): steps, alpha, restarts, loss ce|cw|dlr, targeted")
class PGDAny(PGD):
    pass


@ATTACKS.register("pgd_linf", "PGD, Linf (Madry et al. 2018); 20 steps of eps/4 from a random start by default")
class PGDLinf(PGD):
    norms = ("linf",)


@ATTACKS.register("pgd_l2", "PGD, L2 (Madry et al. 2018); 20 steps of eps/4 from a random start by default")
class PGDL2(PGD):
    norms = ("l2",)


@ATTACKS.register("fgsm", "FGSM (Goodfellow et al. 2015): one step of size eps; FGM for L2")
class FGSM(PGD):
    gradients = "single-step"

    def __init__(self, loss: Literal["ce", "cw", "dlr"] = "ce", targeted: bool = False,
                 target: Literal["random", "least"] = "random", threat: str | None = None):
        super().__init__(steps=1, alpha=None, random_start=False, restarts=1, loss=loss,
                         targeted=targeted, target=target, early_stop=True, threat=threat)

    def step_size(self, budget: Budget) -> float:
        return budget.eps
