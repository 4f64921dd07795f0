"""Training for OOD detection (``defenses.ood``): standard, Outlier Exposure (Hendrycks et al. 2019b), and the
safe-spot paper's eq. (4) (section 3.6), with ``train_ood``."""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from attacks.pgd import PGD
from harness.core.budget import Budget
from harness.core.errors import UsageError
from harness.core.resume import Stateful
from harness.core.training import train_epochs

from ..safe_spot import search


def uniform_kl(logits: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(u || softmax(logits)) = -log K - (1/K) sum_k log C_k (eq. (4), second term)."""
    return -math.log(logits.shape[1]) - F.log_softmax(logits, 1).mean(1)


def uniform_ce(logits: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy to the uniform distribution, -(mean_k z_k - logsumexp z) (OE's outlier loss)."""
    return -(logits.mean(1) - torch.logsumexp(logits, 1))


def eq4_loss(logits_adv_in: torch.Tensor, y: torch.Tensor, logits_out: torch.Tensor | None = None,
             logits_adv_out: torch.Tensor | None = None, c_out: torch.Tensor | None = None, gamma: float = 0.5,
             lam: float = 0.1) -> tuple[torch.Tensor, dict]:
    """The batch estimate of eq. (4): mean CE(x_a*, y_o) + gamma * mean KL(u || C(x^_o)) - lam * mean CE(x^_a*, c(x^_o)).

    ``logits_adv_in`` = model(x_a*), ``logits_out`` = model(x^_o), ``logits_adv_out`` = model(x^_a*), ``c_out`` =
    c(x^_o).  Outlier terms are skipped when their inputs are None or their weight is 0.  Returns (loss, terms)."""
    terms = {"ce_adv_in": F.cross_entropy(logits_adv_in, y)}
    loss = terms["ce_adv_in"]
    if logits_out is not None and gamma != 0:
        terms["kl_uniform_out"] = uniform_kl(logits_out).mean()
        loss = loss + gamma * terms["kl_uniform_out"]
    if logits_adv_out is not None and lam != 0:
        terms["ce_adv_out"] = F.cross_entropy(logits_adv_out, c_out)
        loss = loss - lam * terms["ce_adv_out"]
    return loss, terms


def oe_loss(logits_in: torch.Tensor, y: torch.Tensor, logits_out: torch.Tensor, weight: float = 0.5) -> tuple[torch.Tensor, dict]:
    """Outlier Exposure: mean CE(x_in, y) + weight * mean CE(u, C(x_out)) (Hendrycks et al. 2019b; weight 0.5)."""
    terms = {"ce_in": F.cross_entropy(logits_in, y), "ce_uniform_out": uniform_ce(logits_out).mean()}
    return terms["ce_in"] + weight * terms["ce_uniform_out"], terms


OBJECTIVES = ("standard", "oe", "safe_spot")


class Outliers(Stateful):
    """Outlier batches of ``size`` cycling through a fresh permutation of ``x`` (drawn from ``gen``) whenever it runs
    out; its position is checkpointed with the training."""

    def __init__(self, x: torch.Tensor, size: int, gen: torch.Generator, device):
        self.x, self.size, self.gen, self.device = x, size, gen, device
        self.perm, self.pos = None, 0

    def next(self) -> torch.Tensor:
        take = []
        need = min(self.size, len(self.x))
        while need > 0:
            if self.perm is None or self.pos >= len(self.perm):
                self.perm, self.pos = torch.randperm(len(self.x), generator=self.gen), 0
            part = self.perm[self.pos:self.pos + need]
            self.pos += len(part)
            need -= len(part)
            take.append(part)
        return self.x[torch.cat(take)].to(self.device)

    def state_dict(self) -> dict:
        return {"perm": self.perm, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.perm, self.pos = state["perm"], int(state["pos"])


def train_ood(model: nn.Module, x_in: torch.Tensor, y_in: torch.Tensor, x_out: torch.Tensor | None,
              objective: Literal["standard", "oe", "safe_spot"] = "safe_spot", *, epochs: int = 15, lr: float = 0.1,
              batch_size: int = 128, out_batch_size: int = 256, weight_decay: float = 5e-4, seed: int = 0,
              gamma: float = 0.5, lam: float = 0.1, oe_weight: float = 0.5, norm: str = "linf", eps: float = 0.1,
              delta: float | None = None, search_method: Literal["fgsm", "pgd"] = "pgd", search_steps: int = 10,
              steps: int = 5, alpha: float | None = None, history: list | None = None) -> nn.Module:
    """Train ``model`` in place, from its current weights (so a trained model is fine-tuned): the training loop of
    ``harness.models.recipes.fit`` (SGD momentum 0.9, cosine decay of ``lr`` to 0, seeded shuffling; eval mode while
    searching/attacking, train mode for the loss step).

    ``objective``:
      "standard": CE(x_in).
      "oe": CE(x_in) + ``oe_weight`` * mean uniform_ce(x_out) (Outlier Exposure, lambda = 0.5).
      "safe_spot": eq. (4) with ``gamma``, ``lam``; searches by ``search_method`` (S-FGSM, or S-PGD with
      ``search_steps`` steps of delta/4; section 3.5) and x_a* by ``steps``-step PGD (step eps/4, random start).
      gamma = lam = 0 (or x_out None) is safe-spot-aware adversarial training alone (the ``s-pgd+adv`` recipe).
    Outlier batches of ``out_batch_size`` (OE: 256 for 128 in-distribution images) cycle through a fresh seeded
    permutation of ``x_out`` whenever it runs out.  ``history`` (a list) receives per epoch the mean of each loss term.
    """
    if objective not in OBJECTIVES:
        raise UsageError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    use_out = objective != "standard" and x_out is not None and len(x_out) > 0
    if objective == "oe" and not use_out:
        raise UsageError("Outlier Exposure needs outliers")
    device = next(model.parameters()).device
    delta = eps if delta is None else delta
    attack, budget = PGD(steps=steps, alpha=alpha, early_stop=False), Budget(norm, eps)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(x_in) / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / (epochs * steps_per_epoch))))
    outliers = Outliers(x_out, out_batch_size, gen, device) if use_out else None

    def spot_adversarial(xb, yb):  # x_a* of section 3.5: S-FGSM/S-PGD towards yb, then PGD up CE(., yb)
        x_s = search(model, xb, yb, search_method, norm, delta, search_steps, None, True)
        return attack.iterate(model, x_s, yb, budget, None)

    def step(idx):
        xb, yb = x_in[idx].to(device), y_in[idx].to(device)
        xo = outliers.next() if use_out else None
        model.eval()
        if objective == "safe_spot":
            xa = spot_adversarial(xb, yb).detach()
            if use_out and lam != 0:
                with torch.no_grad():
                    c_out = model(xo).argmax(1)  # c(x^_o): outliers are unlabelled
                xoa = spot_adversarial(xo, c_out).detach()
        model.train()
        if objective == "standard":
            terms = {"ce_in": F.cross_entropy(model(xb), yb)}
            return terms["ce_in"], terms
        if objective == "oe":
            return oe_loss(model(xb), yb, model(xo), oe_weight)
        return eq4_loss(model(xa), yb, model(xo) if use_out and gamma != 0 else None,
                        model(xoa) if use_out and lam != 0 else None, c_out if use_out and lam != 0 else None, gamma, lam)

    log = [] if history is not None else None
    keep = {"model": model, **({"outliers": outliers} if use_out else {})}
    train_epochs(len(x_in), step, opt, sched, epochs=epochs, batch_size=batch_size, gen=gen, keep=keep, log=log,
                 desc=f"train_ood ({objective})")
    if history is not None:  # the terms only, as before ("loss" is their weighted sum)
        history += [{k: v for k, v in epoch.items() if k != "loss"} for epoch in log]
    return model.eval()
