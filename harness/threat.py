"""Threat models: what the attacker sees, where its ball is centred, and the per-sample verdict.

- oblivious: the attack runs on the bare classifier; the defense then acts (weakest; for completeness).
- grey-box: knows the classifier, not the defense; against a preemptive defense its ball is B_eps(x_r).
- white-box: knows everything: it differentiates through a preprocessor, attacks the soft smoothed
  classifier, or (adaptive attacks) reconstructs x_o.  Against a preemptive defense an adversarial image
  outside B_eps(x_o) is invalid and counts as defended (preemptive paper, Definition 3).
- none: no attack (the clean row).
A sample is robust under an attack iff its defended clean prediction is correct and the attack failed:
the defended prediction on the adversarial image is correct, or the image is invalid.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from attacks.base import Attack, flat_norm
from defenses.base import Defense

from .errors import UsageError

THREATS = ("none", "oblivious", "grey-box", "white-box")
# Relative and absolute slack of the budget check, for float rounding in projections.
RTOL, ATOL = 1e-4, 1e-6


@dataclass
class Verdict:
    """Per-sample outcome of one attack on one batch (all tensors of the batch's length, on the CPU)."""

    clean: torch.Tensor
    robust: torch.Tensor
    valid: torch.Tensor
    dist: torch.Tensor
    attacked: torch.Tensor
    extra: dict = field(default_factory=dict)


def resolve_threat(defense: Defense, attack: Attack) -> str:
    """The threat model a cell runs under: the attack's request, else the defense kind's default."""
    if getattr(attack, "is_clean", False):
        return "none"
    threat = attack.threat or ("white-box" if attack.adaptive or defense.kind != "preemptive" else "grey-box")
    if threat not in THREATS:
        raise UsageError(f"unknown threat model {threat!r}; one of {', '.join(THREATS[1:])}")
    if defense.kind == "none" and threat == "oblivious":
        threat = "white-box"  # with no defense, knowing the defense changes nothing
    if threat not in defense.threats and defense.kind != "none":
        raise UsageError(f"threat {threat!r} does not apply to the {defense.kind} defense; use one of {', '.join(defense.threats)}")
    if attack.adaptive and threat != "white-box":
        raise UsageError(f"{type(attack).__name__} is an adaptive (white-box) attack; it cannot run {threat}")
    return threat


def within_budget(x_adv: torch.Tensor, center: torch.Tensor, norm: str, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    d = flat_norm(x_adv - center, norm)
    return d <= eps * (1 + RTOL) + ATOL, d


def run_cell(defense: Defense, model, attack: Attack, threat: str, x_o: torch.Tensor, x_seen: torch.Tensor,
             y: torch.Tensor, clean: torch.Tensor, passes: int = 1) -> Verdict:
    """Attack the undecided samples of one batch under ``threat`` and judge each sample.

    ``x_o``: the original images; ``x_seen``: what the attacker is handed (x_r for a preemptive defense);
    ``clean``: the defended clean verdict (samples already wrong are not attacked).  ``passes``: for a
    randomized defense the adversarial image is classified ``passes`` times; the sample is robust only if
    every pass is correct (the worst case), and the majority vote is kept in ``extra``.
    """
    n = len(y)
    robust = clean.clone()
    valid = torch.ones(n, dtype=torch.bool, device=y.device)
    dist = torch.full((n,), float("nan"), device=y.device)
    attacked = torch.zeros(n, dtype=torch.bool, device=y.device)
    extra = {}
    idx = clean.nonzero().flatten()
    if threat != "none" and idx.numel():
        kw = {"defense": defense, "classifier": model} if attack.adaptive else {}
        x_adv = attack.perturb(defense.surface(model, threat), x_seen[idx], y[idx], **kw).detach()
        center = x_seen[idx] if threat == "grey-box" else x_o[idx]
        ok, d = within_budget(x_adv, center, attack.norm, attack.eps)
        preds = torch.stack([defense.classify(model, x_adv) for _ in range(passes if defense.randomized else 1)])
        correct = preds == y[idx]
        robust[idx] = correct.all(0) | ~ok
        if defense.randomized:
            extra["robust_majority"] = robust.clone()
            extra["robust_majority"][idx] = (correct.float().mean(0) > 0.5) | ~ok
        valid[idx], dist[idx], attacked[idx] = ok, d, True
        for key, val in getattr(attack, "last_extra", {}).items():  # e.g. reconstruction distances
            full = torch.full((n,), float("nan"), device=y.device)
            full[idx] = val.to(full.device, full.dtype)
            extra[key] = full
    return Verdict(clean.cpu(), robust.cpu(), valid.cpu(), dist.cpu(), attacked.cpu(), {k: v.cpu() for k, v in extra.items()})
