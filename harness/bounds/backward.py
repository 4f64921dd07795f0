"""The backward pass of CROWN (Zhang et al. 2018, "Efficient neural network robustness certification with
general activation functions"): linear relaxations of the nonlinear layers and the pull-back of linear
functionals through the network.

For a *lower* bound of ``A z`` (``A``: (B, m, *shape), or (1, m, *shape) while it is the same for every
sample, as it is from a shared specification back to the first nonlinear layer) each nonlinear output
``z = g(v)`` is replaced by the lower line of ``g`` where ``A >= 0`` and by its upper line where ``A < 0``;
that is the recursion ``Lambda^(k-1) = (Lambda^(k) W^(k)) * lambda^(k-1)`` with the offsets ``Delta`` of
Theorem 3.2, written for one sign of ``A`` (an upper bound of ``A z`` is minus the lower bound of ``-A z``).

ReLU with input bounds ``l <= v <= u`` (Zhang et al. 2018, sec. 3, the ReLU case study): stable neurons
are exact (slope 1 if ``l >= 0``, 0 if ``u <= 0``); an unstable one (``l < 0 < u``) has the upper line
``u / (u - l) * (v - l)`` and a lower line ``alpha v`` with ``alpha`` in [0, 1], chosen by ``lower_slope``:

* ``"adaptive"``: 1 if ``u >= -l`` else 0 (CROWN-Ada, the choice that minimises the relaxation's area;
  auto_LiRPA's default);
* ``"same-slope"``: ``u / (u - l)``, parallel to the upper line (Fast-Lin; ``bound_propagation``'s default);
* a number in [0, 1]: that slope for every unstable neuron.

Max-pool over a window with input bounds ``l_i <= v_i <= u_i`` (not in the CROWN paper; a simple sound
relaxation): with ``j`` the element of largest lower bound, the lower line is ``v_j`` (``max_i v_i >= v_j``);
the upper line is ``v_j`` too when ``l_j >= u_i`` for every other ``i`` (then ``max_i v_i = v_j``), else
the constant ``max_i u_i``.  Tighter upper lines exist (a window of several undecided elements gets a
constant); this one keeps the pass a gather/scatter (``F.unfold``/``F.fold``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .graph import Graph
from .layers import Layer, MaxPool, ReLU
from .sets import Box

LowerSlope = str | float


@dataclass(frozen=True)
class ReluRelaxation:
    """Lines ``alpha_lower * v`` <= relu(v) <= ``alpha_upper * v + beta_upper``, elementwise (B, *shape)."""

    alpha_lower: torch.Tensor
    alpha_upper: torch.Tensor
    beta_upper: torch.Tensor

    def backward(self, A: torch.Tensor, in_shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower bound of ``A relu(v)`` as ``A' v + bias`` (Theorem 3.2, one step)."""
        positive, negative = A.clamp(min=0), A.clamp(max=0)
        A_new = positive * self.alpha_lower.unsqueeze(1) + negative * self.alpha_upper.unsqueeze(1)
        return A_new, (negative * self.beta_upper.unsqueeze(1)).flatten(2).sum(-1)


def relu_relaxation(box: Box, lower_slope: LowerSlope) -> ReluRelaxation:
    """CROWN's linear bounds of ReLU on ``[l, u]`` (see the module docstring for ``lower_slope``)."""
    lower, upper = box.lower_bound, box.upper_bound
    active, inactive = lower >= 0, upper <= 0
    unstable = ~(active | inactive)
    slope = upper / torch.where(unstable, upper - lower, torch.ones_like(upper))
    alpha_upper = torch.where(unstable, slope, active.to(lower.dtype))
    beta_upper = torch.where(unstable, -lower * slope, torch.zeros_like(lower))
    if lower_slope == "adaptive":
        chosen = (upper >= -lower).to(lower.dtype)
    elif lower_slope == "same-slope":
        chosen = slope
    elif isinstance(lower_slope, (int, float)) and not isinstance(lower_slope, bool) and 0 <= lower_slope <= 1:
        chosen = torch.full_like(lower, float(lower_slope))
    else:
        raise ValueError(f"lower_slope must be 'adaptive', 'same-slope' or a number in [0, 1], got {lower_slope!r}")
    alpha_lower = torch.where(unstable, chosen, active.to(lower.dtype))
    return ReluRelaxation(alpha_lower, alpha_upper, beta_upper)


@dataclass(frozen=True)
class MaxPoolRelaxation:
    """Per window: ``select`` (B, C, K, L), one-hot over the K window elements of the element ``j`` with the
    largest lower bound; ``exact`` (B, C, L), whether ``v_j`` dominates the window; ``upper`` (B, C, L), the
    constant upper line where it does not.  L is the number of windows (output pixels)."""

    layer: MaxPool
    select: torch.Tensor
    exact: torch.Tensor
    upper: torch.Tensor

    def backward(self, A: torch.Tensor, in_shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower bound of ``A maxpool(v)`` as ``A' v + bias``: the lower line where ``A >= 0``, the upper
        line where ``A < 0``; ``F.fold`` (the adjoint of ``F.unfold``) sums overlapping windows."""
        A = A.flatten(3)
        positive, negative = A.clamp(min=0), A.clamp(max=0)
        coefficient = positive + negative * self.exact.unsqueeze(1).to(A.dtype)
        batch, m, channels = coefficient.shape[:3]  # A may be shared (batch 1); the relaxation is not
        bias = (negative * torch.where(self.exact, 0.0, self.upper).unsqueeze(1)).flatten(2).sum(-1)
        columns = coefficient.unsqueeze(3) * self.select.unsqueeze(1)
        layer = self.layer
        A_new = F.fold(columns.reshape(batch * m, -1, columns.shape[-1]), tuple(in_shape[1:]), layer.kernel,
                       layer.dilation, layer.padding, layer.stride)
        return A_new.view(batch, m, channels, *in_shape[1:]), bias


def windows(layer: MaxPool, x: torch.Tensor) -> torch.Tensor:
    """The pooling windows of ``x`` (B, C, H, W) as (B, C, K, L), padding as -inf (never the max)."""
    ph, pw = layer.padding
    padded = F.pad(x, (pw, pw, ph, ph), value=float("-inf"))
    cols = F.unfold(padded, layer.kernel, layer.dilation, 0, layer.stride)
    return cols.view(x.shape[0], x.shape[1], -1, cols.shape[-1])


def maxpool_relaxation(layer: MaxPool, box: Box) -> MaxPoolRelaxation:
    """The linear bounds of max-pool on ``[l, u]`` (see the module docstring)."""
    lower, upper = windows(layer, box.lower_bound), windows(layer, box.upper_bound)
    best_lower, index = lower.max(2, keepdim=True)
    select = torch.zeros_like(lower).scatter_(2, index, 1.0)
    others = upper.masked_fill(select.bool(), float("-inf")).amax(2)
    return MaxPoolRelaxation(layer, select, best_lower.squeeze(2) >= others, upper.amax(2))


Relaxation = ReluRelaxation | MaxPoolRelaxation


def relaxation(layer: Layer, box: Box, lower_slope: LowerSlope) -> Relaxation:
    """The linear relaxation of a nonlinear layer given the box at its input."""
    if isinstance(layer, ReLU):
        return relu_relaxation(box, lower_slope)
    if isinstance(layer, MaxPool):
        return maxpool_relaxation(layer, box)
    raise TypeError(f"no linear relaxation for layer {layer.name!r} ({type(layer).__name__})")


def pull_back(graph: Graph, A: torch.Tensor, stop: int, shapes: list[torch.Size],
              relaxations: dict[int, Relaxation], start: int = 0,
              monitor: Callable[[int, torch.Tensor], None] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Functionals ``A`` of the input of layer ``stop`` pulled back to the input of layer ``start``: the
    lower linear bound ``A' x + bias`` of ``A z_stop`` valid for every x, the nonlinear layers replaced by
    their ``relaxations`` (Theorem 3.2).  ``monitor(index, A)`` sees the functionals before each step (the
    rounding-error account of ``sound.py``)."""
    bias: torch.Tensor | None = None
    for index in range(stop - 1, start - 1, -1):
        if monitor is not None:
            monitor(index, A)
        step = relaxations[index] if graph.layers[index].nonlinear else graph.layers[index]
        A, b = step.backward(A, shapes[index])
        if b is not None:
            bias = b if bias is None else bias + b
    return A, bias
