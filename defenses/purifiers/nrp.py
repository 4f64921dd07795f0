"""NRP: neural representation purifier (Naseer et al., CVPR 2020; `Muzammal-Naseer/NRP`).

The purifier P is ESRGAN's RRDB generator without upsampling (``networks.RRDBNet``; JATP's comparison uses
3 basic blocks, as here).  It is trained *self-supervised*, independently of the target classifier
(Algorithm 1 of the paper): each batch is perturbed by the self-supervised perturbation (SSP, eq. 3)

    x' = argmax_{||x' - x||_inf <= eps} || F(x') - F(x) ||_2^2       (sign steps, init x + N(0,1) projected)

where F is a fixed feature extractor (ImageNet VGG-16 up to relu3_3 in the paper), and P minimises the
perceptual (feature) loss plus a pixel loss,

    L = feat_weight * MSE(F(P(x')), F(x)) + pix_weight * MSE(P(x'), x).

Scaled to the digits: F is the *standard-trained* digits CNN (zoo ``digits_cnn``) up to its second conv's
ReLU (``features.3``, mid-level like relu3_3) - a fixed network other than the target, as VGG is in the
paper; ``feature_model=None`` uses the target instead.  The paper's third term, a relativistic GAN loss
with a discriminator, is left out (paper-only; the official repo has no training script); so is its
MS-COCO training set (we train on the digits training split).  ``dynamic=True`` gives NRP's dynamic
inference (``purify.py --dynamic``): x + N(0, 0.05^2) clipped to Linf 16/255 and [0, 1] before P - a
random preprocessor, attack it with EOT.
"""
from __future__ import annotations

import torch

from harness.core.registry import DEFENSES

from .networks import NRP_PAPER, RRDBNet
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
    "nf": 16, "nb": 3, "gc": 8,
    "feature_layer": "features.3", "train_eps": 0.1, "train_steps": 5, "train_step_size": 0.025,
    "feat_weight": 1.0, "pix_weight": 10.0,
    "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "milestones": (0.6, 0.9), "gamma": 0.1,
    "epochs": 8, "batch_size": 64, "seed": 0,
}

# The paper's ImageNet/MS-COCO settings (docs/REFERENCE-IMPLEMENTATIONS.md 5a; ssp.py).  Documented, not run.
# JATP's Table 1 uses NRP with nb = 3 on CIFAR-10 ("only reduce the number of basic blocks to 3").
PAPER = {**NRP_PAPER, "feature_model": "vgg16 (ImageNet) features[:16] (relu3_3)", "train_eps": 16 / 255,
         "train_steps": 100, "train_step_size": 0.01, "init": "randn", "loss": "feature + pixel + RaGAN (unverified)",
         "jatp_cifar10": {"nb": 3}, "seed": 0}


def nrp_loss(feature_net, layer: str, x_hat: torch.Tensor, x: torch.Tensor, feat_weight: float, pix_weight: float):
    tap = Features(feature_net, layer)
    with torch.no_grad():
        ref = tap(x)[1]
    feat = per_sample_mse(tap(x_hat)[1], ref).mean()
    pix = per_sample_mse(x_hat, x).mean()
    return feat_weight * feat + pix_weight * pix, {"feat": feat.detach(), "pix": pix.detach()}


def _fnet(ctx: Context):
    return ctx.feature_net if ctx.feature_net is not None else ctx.target


def _craft(ctx: Context, x_in: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSP (eq. 3): maximise the feature distortion of the fixed extractor; labels are not used."""
    cfg, tap = ctx.cfg, Features(_fnet(ctx), ctx.cfg["feature_layer"])
    return feature_attack(lambda z: tap(z)[1], x, cfg["train_eps"], cfg["train_steps"], cfg["train_step_size"],
                          init="randn")


def _loss(ctx: Context, x_adv: torch.Tensor, x: torch.Tensor, y: torch.Tensor):
    cfg = ctx.cfg
    return nrp_loss(_fnet(ctx), cfg["feature_layer"], ctx.net(x_adv), x, cfg["feat_weight"], cfg["pix_weight"])


METHOD = register_method(Method(
    "nrp", build=lambda c, cfg: RRDBNet(c, cfg["nf"], cfg["nb"], cfg["gc"]), defaults=DEFAULTS, paper=PAPER,
    craft=_craft, loss=_loss, feature_net=True), __name__)


@DEFENSES.register("nrp", "NRP purifier (Naseer et al. 2020): RRDB P trained self-supervised on SSP feature-distortion examples")
def nrp(checkpoint: str | None = None, target: str = "digits_cnn_adv", feature_model: str | None = "standard",
        dataset: str | None = None, train_split: str | None = None, train_epochs: int = DEFAULTS["epochs"],
        train_eps: float | None = None,
        feature_layer: str = DEFAULTS["feature_layer"], nf: int = DEFAULTS["nf"], nb: int = DEFAULTS["nb"],
        gc: int = DEFAULTS["gc"], train_seed: int = 0, dynamic: bool = False,
        data_dir: str | None = None) -> PurifierDefense:
    """NRP purifier (Naseer et al. 2020): RRDB P trained self-supervised on SSP feature-distortion examples.

    ``feature_model``: the zoo model whose ``feature_layer`` plays VGG's role ("standard": the zoo's
    standard-trained CNN of the training dataset, ``digits_cnn`` or ``mnist_cnn``; None: the target).  NRP's
    training never looks at the target's labels or outputs; ``target`` is kept for the cache key and
    for ``feature_model=None``.  ``train_eps``: SSP's budget (default: the dataset's Linf budget).
    ``dynamic``: NRP's random dynamic inference (``randomized``).
    """
    train_eps = train_eps if train_eps is not None else default_train_eps(target, dataset, data_dir)
    cfg = {"epochs": train_epochs, "train_eps": train_eps, "train_step_size": train_eps / 4,
           "feature_layer": feature_layer, "nf": nf, "nb": nb, "gc": gc, "seed": train_seed}
    return build_purifier("nrp", cfg, target=target, dataset=dataset, train_split=train_split, checkpoint=checkpoint,
                          data_dir=data_dir, feature_model=feature_model, dynamic=dynamic)
