"""The A5 objective (Frosio & Kautz, CVPR 2023, "The Best Defense is a Good Offense:
Adversarial Augmentation Against Adversarial Attacks"): margin lower bounds, the worst-case cross-entropy (eqs. 2-3), the defensive
perturbation (eq. 5), the training loss and eps schedule of the official ``a5.py``, and certification.

* Margins (eq. 1 and the margin vector of sec. 3): lower bounds of ``f_y(x') - f_j(x')``, ``j != y``, over the
  Linf ball B_eps(x) ∩ [0, 1], with the specification ``C`` of rows ``e_y - e_j`` (the official code's ``c``;
  tighter than the paper's text ``y^l_y - y^u_j``), by ``harness.bounds``.
* ``bound``: "ibp" (Gowal et al. 2018), "crown" (Zhang et al. 2018) or "crown-ibp" (Zhang et al. 2020, the
  official default), the last one mixed as ``f * CROWN-IBP + (1 - f) * IBP`` with the factor ``f`` of the official
  ``compute_predictions_and_loss`` (``mix`` below): f falls from 1 to 0 over the eps ramp and is 0 at test time,
  so a CROWN-IBP run *reports* the IBP bound.
* ReLU lower slope: "same-slope", the official ``bound_opts={'relu': 'same-slope'}``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from harness.bounds import margin_bounds, margin_matrix

BOUNDS = ("ibp", "crown-ibp", "crown")
LOWER_SLOPE = "same-slope"  # the official BoundedModule's bound_opts


def margin_lower(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, bound: str = "crown-ibp",
                 mix: float = 0.0, lower_slope=LOWER_SLOPE, sound: bool = False) -> torch.Tensor:
    """Lower bounds (B, classes - 1) of the margins over B_eps(x) ∩ [0, 1] (A5 eq. 1, official ``c`` rows).

    ``bound="crown-ibp"``: ``mix * CROWN-IBP + (1 - mix) * IBP`` (Zhang et al. 2020, sec. 3; official
    ``lb = clb * f + ilb * (1 - f)``, IBP alone when f < 1e-5).  ``eps == 0``: the exact margins of ``model(x)``.
    Differentiable in ``x`` and in the model's parameters, except with ``sound`` (float64 bounds that hold under
    floating-point rounding, ``harness.bounds.sound``: for certificates, not training)."""
    if bound not in BOUNDS:
        raise ValueError(f"bound must be one of {BOUNDS}, got {bound!r}")
    if eps <= 0:
        logits = model(x)
        C = margin_matrix(y, logits.shape[1], logits.dtype)
        return torch.einsum("bmk,bk->bm", C, logits)
    if bound == "ibp" or (bound == "crown-ibp" and mix < 1e-5):
        return margin_bounds(model, x, y, eps, method="ibp", sound=sound)
    if bound == "crown":
        return margin_bounds(model, x, y, eps, method="crown", lower_slope=lower_slope, sound=sound)
    return margin_bounds(model, x, y, eps, method="crown-ibp", beta=min(float(mix), 1.0), lower_slope=lower_slope,
                         sound=sound)


def worst_case_ce(lb: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """The worst-case cross-entropy E(x) of A5 eqs. 2-3: softmax over the negated margin vector, whose entry for
    the true class is 0 (``m_{j*} = 0``), i.e. CE over the logits ``[0, -lb]`` with target 0 (official
    ``ver_ce = ce(-lb_padded, fake_labels)``).  ``reduction``: "mean", "sum" or "none"."""
    logits = torch.cat([torch.zeros_like(lb[:, :1]), -lb], 1)
    return F.cross_entropy(logits, torch.zeros(len(lb), dtype=torch.long, device=lb.device), reduction=reduction)


def a5_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, f: float, bound: str = "crown-ibp",
            lower_slope=LOWER_SLOPE) -> tuple[torch.Tensor, dict]:
    """The official training loss ``f * CE(C(x), y) + (1 - f) * E(x)`` (``compute_predictions_and_loss``; CROWN-IBP's
    ``kappa * natural + (1 - kappa) * robust`` loss, Zhang et al. 2020 eq. 7, with kappa = f and the CROWN-IBP mix
    factor = f), E the worst-case CE of A5 eq. 3 at ``eps``.  ``f == 1``: the natural loss alone.
    Returns the loss and batch statistics (natural / verified error, fractions)."""
    logits = model(x)
    reg_ce = F.cross_entropy(logits, y)
    stats = {"err": float((logits.argmax(1) != y).float().mean())}
    if f >= 1:
        return reg_ce, stats
    lb = margin_lower(model, x, y, eps, bound, f, lower_slope)
    stats["ver_err"] = float((lb < 0).any(1).float().mean())
    return f * reg_ce + (1 - f) * worst_case_ce(lb), stats


def perturb(x: torch.Tensor, z: torch.Tensor, delta: float) -> torch.Tensor:
    """x + dx_D(z) clipped to [0, 1], dx_D(z) = 2 eps_D (sigmoid(z) - 1/2) (A5 eq. 5; official ``zx2x_rob``):
    ||x_r - x||_inf <= eps_D for every z (the clip only moves pixels towards x)."""
    return (x + delta * (2 * torch.sigmoid(z) - 1)).clamp(0, 1)


def smoothed_eps(step: int, eps: float, per_epoch: int, start: int = 3, length: int = 18, mid: float = 0.3,
                 beta: float = 4.0) -> float:
    """The budget of training batch ``step`` (0-based, counted over all epochs) under auto_LiRPA's
    ``SmoothedScheduler`` (the official default ``start=3,length=18,mid=0.3``, one ``step_batch`` before the first
    batch): 0 during epochs 1 .. start-1, ``alpha (step - init)^beta`` growth up to the mid point of the ramp, then
    linear, reaching ``eps`` at the end of epoch start+length-1 (CROWN-IBP's eps ramp, Zhang et al. 2020 sec. 4,
    in auto_LiRPA's smoothed form).  ``length <= 0``: no ramp, ``eps`` from the first batch."""
    if eps <= 0:
        return 0.0
    if length <= 0:
        return float(eps)
    init, final = (start - 1) * per_epoch, (start + length - 1) * per_epoch
    if step <= init:
        return 0.0
    if final <= init:
        return float(eps)
    mid_step = int((final - init) * mid) + init
    t = float(mid_step - init) ** (beta - 1)
    denom = (final - mid_step) * beta * t + (mid_step - init) * t
    if denom <= 0:  # mid = 0: a linear ramp
        return float(eps) * min(1.0, (step - init) / (final - init))
    alpha = eps / denom
    if step < mid_step:
        return float(alpha * (step - init) ** beta)
    mid_value = alpha * (mid_step - init) ** beta
    return float(min(mid_value + (eps - mid_value) * (step - mid_step) / max(final - mid_step, 1), eps))


def mix_factor(eps_now: float, eps: float) -> float:
    """The official ``f = (max_eps - eps_now) / max(max_eps, 1e-12)``: 1 before the ramp, 0 after it."""
    return (eps - eps_now) / max(eps, 1e-12) if eps > 0 else 1.0


@torch.no_grad()
def certify(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, methods=("ibp", "crown-ibp"),
            batch: int = 200, sound: bool = True) -> dict[str, torch.Tensor]:
    """Per-sample masks: ``clean`` (correct on x) and, per method, certified at ``eps`` (every margin lower bound
    > 0, the official ``ver_err`` counts ``lb < 0``; A5 Definition 1).  "ibp" is what the official test reports
    (f = 0); "crown-ibp" is the pure CROWN-IBP bound (f = 1), "crown" full CROWN (small networks only).
    ``sound``: certificates that hold under floating-point rounding (``harness.bounds.sound``)."""
    out = {"clean": torch.cat([model(x[i:i + batch]).argmax(1) == y[i:i + batch] for i in range(0, len(x), batch)])}
    for m in methods:
        mix = 1.0 if m == "crown-ibp" else 0.0
        out[m] = torch.cat([(margin_lower(model, x[i:i + batch], y[i:i + batch], eps, m, mix, sound=sound) > 0).all(1)
                            for i in range(0, len(x), batch)])
    return out


def per_epoch(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))
