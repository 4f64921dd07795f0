"""JATP: Joint Adversarial Training based Pre-processing (Zhou et al., arXiv 2106.05453, Algorithm 1).

The purifier P (NRP's RRDB network with 3 basic blocks, Sec. 4.1) is trained in front of a fixed, adversarially
trained target T on *full* adversarial examples - crafted against the full model F = T∘P in feature space:

    eq. 5   x̃* = argmax_{x̃ ∈ B_eps(x)} d(f*(x̃), f*(x)),  f* = an internal feature map of F (d = MSE here),

by Linf sign ascent (``training.feature_attack``), then P minimises (eq. 10)

    L_JATP = L_adv + beta * L_pix,
    eq. 6   L_pix = ||P(x̃*) - x||_2                                   (per-sample L2 norm, batch mean)
    eq. 7   l_BCE = -log T_y(P(x̃*)) - log(1 - max_{k≠y} T_k(P(x̃*)))    (T_k: softmax probabilities, eq. 1)
    eq. 8   l_FSM = d(t*(P(x̃*)), t*(P(x)))                              (MSE of T's internal features)
    eq. 9   L_adv = mean_i [ l_BCE_i + alpha * l_FSM_i * (1 - T_y(P(x_i))) ]

with alpha = 5, beta = 3 (Sec. 4.1).  The soft weight 1 - T_y(P(x)) replaces 1(F(x) ≠ y) of the risk in eq. 4
(MART-style); as in MART's code it is not detached.  ``-log(1 - max_{k≠y} T_k)`` is computed exactly and stably
as logsumexp(z) - logsumexp(z without class k*), k* = argmax_{k≠y} z_k.
``mode="obl"`` crafts the examples against T alone (eq. 5 with f* = t*, "Obl" of Fig. 1(c)/2(a)); everything
else is unchanged.  Only P is updated; the target stays fixed.

Feature layer: the paper taps ResNet-18's "last convolution layer in the third basic block" (Sec. 3.1), a
mid-level layer.  The small digits CNN has 4 convs; its analogue is the third conv, ``features.5``.
During training the loss sees P's raw output (a clamp would stop the pixel-loss gradient for out-of-range
values); the crafted examples and the deployed defense use P's output clamped to [0, 1].
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from harness.core.registry import DEFENSES

from .networks import JATP_PAPER, RRDBNet
from .training import (
    Context,
    Features,
    Method,
    PurifierDefense,
    build_purifier,
    default_train_eps,
    feature_attack,
    per_sample_mse,
    register_method,
)

DEFAULTS = {
    # network: NRP's RRDB with nb = 3 basic blocks (paper: nf 64, gc 32), scaled for the CPU
    "nf": 16, "nb": 3, "gc": 8,
    # eq. 5 examples: Linf eps (paper 8/255 for CIFAR; the digits budget 0.1 here), sign steps of eps/4
    "mode": "full", "train_eps": 0.1, "train_steps": 5, "train_step_size": 0.025, "feature_layer": "features.5",
    # eqs. 9-10
    "alpha": 5.0, "beta": 3.0, "pixel": "l2",
    # paper: SGD momentum 0.9, wd 2e-4, lr 1e-2 divided by 10 at epochs 15 and 25 of 30 (same fractions
    # here).  lr 1e-3 here: from a random initialisation, lr 1e-2 diverges (NaN) on the digits within 3 epochs.
    "optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "weight_decay": 2e-4, "milestones": (0.5, 0.833),
    "gamma": 0.1, "epochs": 5, "batch_size": 64, "seed": 0,
}

# The paper's CIFAR-10 settings (Sec. 4.1).  Not stated in the paper (our choices, marked): the number of
# eq. 5 steps, the batch size, the random start.  Target: ResNet-18 TRADES, feature layer layer2.0.conv2.
PAPER = {**JATP_PAPER, "mode": "full", "train_eps": 8 / 255, "train_step_size": 0.01,
         "train_steps": 10,  # not stated in the paper
         "feature_layer": "layer2.0.conv2", "alpha": 5.0, "beta": 3.0, "pixel": "l2",
         "optimizer": "sgd", "lr": 1e-2, "momentum": 0.9, "weight_decay": 2e-4, "milestones": (0.5, 0.833),
         "gamma": 0.1, "epochs": 30, "batch_size": 128,  # batch size not stated in the paper
         "seed": 0}


def jatp_loss(target, p_adv: torch.Tensor, p_nat: torch.Tensor, x: torch.Tensor, y: torch.Tensor, *,
              layer: str, alpha: float = 5.0, beta: float = 3.0, pixel: str = "l2") -> tuple[torch.Tensor, dict]:
    """L_JATP (eq. 10) of purified adversarial ``p_adv`` = P(x̃*) and purified natural ``p_nat`` = P(x).

    Returns (loss, {"bce", "fsm", "weight", "pix", "adv"}: the batch means of l_BCE (eq. 7), l_FSM (eq. 8),
    1 - T_y(P(x)), L_pix (eq. 6) and L_adv (eq. 9)).  ``pixel``: "l2" (eq. 6 as written, per-sample L2
    norm) or "mse" (mean squared error).
    """
    feats = Features(target, layer)
    z_adv, f_adv = feats(p_adv)
    z_nat, f_nat = feats(p_nat)
    onehot = F.one_hot(y, z_adv.shape[1]).bool()
    ce = F.cross_entropy(z_adv, y, reduction="none")                                  # -log T_y(P(x̃*))
    kstar = z_adv.detach().masked_fill(onehot, float("-inf")).argmax(1)
    without_k = z_adv.masked_fill(F.one_hot(kstar, z_adv.shape[1]).bool(), float("-inf"))
    log_1m = torch.logsumexp(without_k, 1) - torch.logsumexp(z_adv, 1)                 # log(1 - T_k*)
    bce = ce - log_1m                                                                   # eq. 7
    fsm = per_sample_mse(f_adv, f_nat)                                                  # eq. 8
    weight = 1.0 - F.softmax(z_nat, 1).gather(1, y[:, None])[:, 0]                      # 1 - T_y(P(x))
    l_adv = (bce + alpha * fsm * weight).mean()                                         # eq. 9
    diff = (p_adv - x).flatten(1)
    l_pix = diff.norm(dim=1).mean() if pixel == "l2" else diff.pow(2).mean()            # eq. 6
    loss = l_adv + beta * l_pix                                                         # eq. 10
    return loss, {"bce": bce.mean().detach(), "fsm": fsm.mean().detach(), "weight": weight.mean().detach(),
                  "pix": l_pix.detach(), "adv": l_adv.detach()}


def _craft(ctx: Context, x_in: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Eq. 5: full (against T∘P) or oblivious (against T) feature-space adversarial examples."""
    cfg = ctx.cfg
    tap = Features(ctx.target, cfg["feature_layer"])
    if cfg["mode"] == "full":
        feat = lambda z: tap(ctx.net(z).clamp(0, 1))[1]  # noqa: E731
    elif cfg["mode"] == "obl":
        feat = lambda z: tap(z)[1]  # noqa: E731
    else:
        raise ValueError(f"JATP mode must be full or obl, got {cfg['mode']!r}")
    return feature_attack(feat, x, cfg["train_eps"], cfg["train_steps"], cfg["train_step_size"], init="uniform")


def _loss(ctx: Context, x_adv: torch.Tensor, x: torch.Tensor, y: torch.Tensor):
    cfg = ctx.cfg
    p = ctx.net(torch.cat([x_adv, x]))
    p_adv, p_nat = p[:len(x)], p[len(x):]
    return jatp_loss(ctx.target, p_adv, p_nat, x, y, layer=cfg["feature_layer"], alpha=cfg["alpha"],
                     beta=cfg["beta"], pixel=cfg["pixel"])


METHOD = register_method(Method(
    "jatp", build=lambda c, cfg: RRDBNet(c, cfg["nf"], cfg["nb"], cfg["gc"]), defaults=DEFAULTS, paper=PAPER,
    craft=_craft, loss=_loss), __name__)


@DEFENSES.register("jatp", "JATP purifier (Zhou et al. 2021): RRDB P jointly trained on full adversarial examples (eqs. 5-10)")
def jatp(checkpoint: str | None = None, target: str = "digits_cnn_adv", dataset: str | None = None,
         train_split: str | None = None, mode: Literal["full", "obl"] = "full", train_epochs: int = DEFAULTS["epochs"],
         train_eps: float | None = None, train_steps: int = DEFAULTS["train_steps"],
         fsm_weight: float = DEFAULTS["alpha"], pix_weight: float = DEFAULTS["beta"],
         feature_layer: str = DEFAULTS["feature_layer"], nf: int = DEFAULTS["nf"], nb: int = DEFAULTS["nb"],
         gc: int = DEFAULTS["gc"], train_seed: int = 0, data_dir: str | None = None) -> PurifierDefense:
    """JATP purifier (Zhou et al. 2021): RRDB P jointly trained on full adversarial examples (eqs. 5-10).

    ``checkpoint``: a state dict of the RRDB network (loaded with weights_only); None trains on first use
    against the zoo model ``target`` on ``train_split`` of ``dataset`` (default: the target's own training
    data; ``data_dir`` for MNIST) and caches the weights.
    ``mode``: "full" (eq. 5 against T∘P) or "obl" (against T only); ``train_eps``: eq. 5's budget (default:
    the dataset's Linf budget).  ``fsm_weight`` is alpha and
    ``pix_weight`` beta of eqs. 9-10 (named so that ``--set alpha=`` for an attack never retrains P).
    """
    train_eps = train_eps if train_eps is not None else default_train_eps(target, dataset, data_dir)
    cfg = {"mode": mode, "epochs": train_epochs, "train_eps": train_eps, "train_steps": train_steps,
           "train_step_size": train_eps / 4, "alpha": fsm_weight, "beta": pix_weight,
           "feature_layer": feature_layer, "nf": nf, "nb": nb, "gc": gc, "seed": train_seed}
    return build_purifier("jatp", cfg, target=target, dataset=dataset, train_split=train_split, checkpoint=checkpoint,
                          data_dir=data_dir)
