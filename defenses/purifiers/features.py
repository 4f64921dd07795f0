"""What the purifiers' losses and crafted inputs are made of (``defenses.purifiers.training``): a model's logits
and an internal layer in one pass (``Features``), the per-sample MSE, and the Linf feature-distortion attack
(NRP's SSP, JATP's full adversarial examples)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from harness.core.errors import UsageError
from harness.core.geometry import project, random_in_ball


class Features:
    """One forward pass of ``model`` giving (logits, the output of the submodule named ``layer``).

    ``layer="logits"`` taps the output itself (HGD's "LGD"); a module path such as ``"features"`` (the
    small CNN's top feature map, HGD's "FGD") or ``"features.5"`` (its third conv) taps that module.
    """

    def __init__(self, model: nn.Module, layer: str):
        self.model, self.layer = model, layer
        if layer not in ("logits", "output"):
            try:
                self.module = model.get_submodule(layer)
            except AttributeError:
                names = [n for n, _ in model.named_modules() if n][:12]
                raise UsageError(f"the model has no layer {layer!r} to take features from; "
                                 f"use 'logits' or one of {', '.join(names)}") from None

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.layer in ("logits", "output"):
            out = self.model(x)
            return out, out
        box = []
        handle = self.module.register_forward_hook(lambda m, i, o: box.append(o))
        try:
            out = self.model(x)
        finally:
            handle.remove()
        return out, box[-1]


def per_sample_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared difference per sample (the d(.) of JATP eq. 8 and NRP's feature distortion)."""
    return (a - b).pow(2).flatten(1).mean(1)


def feature_attack(feat: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, eps: float, steps: int,
                   step_size: float, init: str = "uniform") -> torch.Tensor:
    """Linf sign ascent of the feature distortion sum_i MSE(feat(x'_i), feat(x_i)) within B_eps(x) ∩ [0,1].

    NRP's SSP (Naseer et al. 2020, eq. 3) with ``feat`` = a fixed feature network, and JATP's full
    adversarial examples (Zhou et al. 2021, eq. 5) with ``feat`` = an internal layer of the full model T∘P.
    ``init``: "uniform" (U(-eps, eps)), "randn" (x + N(0, 1) projected, as NRP's ssp.py) or "none".
    """

    x = x.detach()
    with torch.no_grad():
        ref = feat(x)
    if init == "uniform":
        x_adv = (x + random_in_ball(x, "linf", eps)).clamp(0, 1)
    elif init == "randn":
        x_adv = project(x + torch.randn_like(x), x, "linf", eps)
    else:
        x_adv = x.clone()
    for _ in range(steps):
        xa = x_adv.detach().requires_grad_(True)
        loss = per_sample_mse(feat(xa), ref).sum()
        (g,) = torch.autograd.grad(loss, xa)
        x_adv = project(xa.detach() + step_size * g.sign(), x, "linf", eps)
    return x_adv.detach()
