"""Threat models: what the attacker sees, where its ball is centred, and the per-sample verdict.

- oblivious: the attack runs on the bare classifier; the defense then acts (weakest; for completeness).
- grey-box: knows the classifier, not the defense; against a preemptive defense its ball is B_eps(x_r).
- white-box: knows everything: it differentiates through a preprocessor, attacks the soft smoothed
  classifier, or (adaptive attacks) reconstructs x_o.  Against a preemptive defense an adversarial image
  outside B_eps(x_o) is invalid and counts as defended (preemptive paper, Definition 3).
- none: no attack (the clean row).
A sample is robust under an attack iff its defended clean prediction is correct and the attack failed:
the defended prediction on the adversarial image is correct, or the image is invalid.

An attack hands back an ``AttackResult`` (``Attack.run``): the images, and optionally
- ``candidates``: a list of image batches (e.g. one per eps' of the adaptive attack's sweep).  The sample is then
  non-robust iff ANY candidate is valid (within the ball) and misclassified: the worst case over the candidates,
  judged by the evaluator, which knows x_o (the attack cannot check validity itself).  The reported image per
  sample is the first valid success, else the first (invalid) success, else the returned image; ``valid`` is False
  exactly when the sample had a misclassifying candidate and every one of them was invalid.
- ``points``: {name: image batch}; the distance of each image to x_o (in the attack's norm) lands in
  ``Verdict.extra[name + "_dist"]`` (e.g. the reconstruction x_hat_o of the adaptive attack, Figure 3).
- ``extra``: per-sample values recorded as they are.

An adaptive attack is handed the defense and the bare classifier in its ``AttackContext``, and a ``Referee``
(``context.referee``) where the defense is deterministic and not a detector: ``referee.settled(images)`` says which
samples that batch of candidates has already decided for good
(a valid, misclassifying image: no later candidate can change the sample's robust, valid or dist).  The attack may
use it only to stop working on those samples (no work on samples already decided); it learns nothing else of x_o.

Detectors (``defense.rejects``): ``classify`` returns -1 (ABSTAIN) for a rejected input, so ``robust``
counts a rejected adversarial image as NOT defended (rejection = failure).  Four per-sample entries in ``extra``
give the other reading and the detection numbers: ``robust_reject_defended`` (robust when a rejected adversarial
image counts as defended; the clean verdict is the same in both: a rejected clean image is an error),
``rejected`` (1/0 for the adversarial image of an attacked sample, NaN otherwise), and ``score_clean`` /
``score_adv`` (the detector's score of the attacked sample's clean input and of its adversarial image).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from harness.core.attack import NO_CONTEXT, Attack, AttackContext
from harness.core.budget import Budget
from harness.core.capabilities import Randomized, declares
from harness.core.defense import ABSTAIN, Defense
from harness.core.errors import UsageError
from harness.core.geometry import flat_norm

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
    threat = attack.threat or ("white-box" if attack.adaptive else defense.default_threat)
    if threat not in THREATS:
        raise UsageError(f"unknown threat model {threat!r}; one of {', '.join(THREATS[1:])}")
    threat = defense.threat_for(threat)
    if attack.adaptive and threat != "white-box":
        raise UsageError(f"{type(attack).__name__} is an adaptive (white-box) attack; it cannot run {threat}")
    return threat


@dataclass
class Referee:
    """The evaluator's final word on candidate images of the attacked samples (see the module docstring)."""

    judge: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]

    def settled(self, images: torch.Tensor) -> torch.Tensor:
        """Per sample: ``images`` holds a valid (within the original's budget) misclassified image."""
        ok, _, correct, _ = self.judge(images.detach())
        return ok & ~correct.all(0)


def within_budget(x_adv: torch.Tensor, center: torch.Tensor, norm: str, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    d = flat_norm(x_adv - center, norm)
    return d <= eps * (1 + RTOL) + ATOL, d


def run_cell(defense: Defense, model, attack: Attack, threat: str, budget: Budget, x_o: torch.Tensor,
             x_seen: torch.Tensor, y: torch.Tensor, clean: torch.Tensor, passes: int = 1) -> Verdict:
    """Attack the undecided samples of one batch under ``threat`` at ``budget`` and judge each sample.

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
    detector, randomized = defense.rejects, declares(defense, Randomized)
    if detector:
        extra["robust_reject_defended"] = robust.clone()
        for key in ("rejected", "score_clean", "score_adv"):
            extra[key] = torch.full((n,), float("nan"), device=y.device)
    idx = clean.nonzero().flatten()
    if threat != "none" and idx.numel():
        center = x_seen[idx] if threat == "grey-box" else x_o[idx]

        def judge(img):  # (within budget, distance, correct per pass, rejected per pass) of one batch of images
            ok, d = within_budget(img, center, budget.norm, budget.eps)
            preds = torch.stack([defense.classify(model, img) for _ in range(passes if randomized else 1)])
            return ok, d, preds == y[idx], preds == ABSTAIN

        context = NO_CONTEXT
        if attack.adaptive:  # no referee where "settled" would not fix the majority / rejection reading
            context = AttackContext(defense, model, None if randomized or detector else Referee(judge))
        result = attack.run(defense.surface(model, threat), x_seen[idx], y[idx], budget, context)
        if attack.certifies:  # no image to judge: robust iff certified (and clean)
            certified = result.extra["certified"].to(robust.device).bool()
            robust[idx], attacked[idx] = certified, True
            extra["certified"] = torch.full((n,), float("nan"), device=y.device)
            extra["certified"][idx] = certified.float()
            return Verdict(clean.cpu(), robust.cpu(), valid.cpu(), dist.cpu(), attacked.cpu(),
                           {k: v.cpu() for k, v in extra.items()})
        x_adv = result.images.detach()
        ok, d, correct, rejected = judge(x_adv)
        fooled = ~correct.all(0)
        robust[idx] = ~fooled | ~ok
        majority = (correct.float().mean(0) > 0.5) | ~ok
        stopped = (correct | rejected).all(0) | ~ok  # the attack failed when a rejection counts as defended
        if detector:
            extra["rejected"][idx] = rejected.any(0).float()
            extra["score_adv"][idx] = defense.score(model, x_adv).to(extra["score_adv"])
            extra["score_clean"][idx] = defense.score(model, x_seen[idx]).to(extra["score_clean"])
        cands = result.candidates
        if cands:  # worst case over the candidates; report the first valid success, else the first success
            pick_d = d.clone()
            seen_valid, seen_fool = fooled & ok, fooled.clone()
            for cand in cands:
                c_ok, c_d, c_correct, c_rejected = judge(cand.detach())
                stopped &= (c_correct | c_rejected).all(0) | ~c_ok
                c_fool = ~c_correct.all(0)
                take = (c_fool & c_ok & ~seen_valid) | (c_fool & ~seen_fool)
                pick_d[take] = c_d[take]
                seen_valid |= c_fool & c_ok
                seen_fool |= c_fool
                majority &= (c_correct.float().mean(0) > 0.5) | ~c_ok
            robust[idx] = ~seen_valid
            ok, d = ~(seen_fool & ~seen_valid), pick_d
        if detector:
            extra["robust_reject_defended"][idx] = stopped
        if randomized:
            extra["robust_majority"] = robust.clone()
            extra["robust_majority"][idx] = majority
        valid[idx], dist[idx], attacked[idx] = ok, d, True
        points = {f"{k}_dist": flat_norm(p.detach() - x_o[idx], budget.norm)
                  for k, p in result.points.items()}
        for key, val in {**result.extra, **points}.items():  # e.g. reconstruction distances
            full = torch.full((n,), float("nan"), device=y.device)
            full[idx] = val.to(full.device, full.dtype)
            extra[key] = full
    return Verdict(clean.cpu(), robust.cpu(), valid.cpu(), dist.cpu(), attacked.cpu(), {k: v.cpu() for k, v in extra.items()})
