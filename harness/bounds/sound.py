"""Margin lower bounds that hold under floating-point arithmetic (``margin_bounds(..., sound=True)``).

The bounds of IBP (Gowal et al. 2018), CROWN (Zhang et al. 2018) and CROWN-IBP (Zhang et al. 2020) are proved for
real arithmetic; computed in float32 they carry rounding errors of about 1e-6 of the magnitudes summed, in either
direction, so a float32 lower bound can exceed the minimum the network (with exactly its float32 weights) attains
on the ball.  A margin certified within that distance of 0 is not a certificate.  Here the bound is made rigorous
for the real-arithmetic network with the model's weights, over the real ball:

1. everything is recomputed in float64 (float32 weights and images convert exactly); the input box is rounded
   outwards (``torch.nextafter``) so that it contains the real Linf ball (the L2 radius likewise);
2. the float64 computation's own error is bounded by the standard forward error bound of a sum of n products,
   |fl(sum) - sum| <= gamma_n sum |terms|, gamma_n ~ n u with u = 2^-53 (Higham, "Accuracy and Stability of
   Numerical Algorithms", 2nd ed., sec. 3.1), and subtracted:  lb_sound = lb_64 - delta,
        delta = 2 (L + 1) N u |C| M_L,
   where M_L bounds the magnitude of every term that enters any forward or backward sum: M_0 = max(|lower|,
   |upper|) of the input box, M_{k+1} = |W_k| M_k + |b_k| through each affine layer (the absolute network; ReLU
   and max-pool keep M), which bounds |z_k| on the ball, the CROWN coefficients (|Lambda_k| <= |C W_L ... W_{k+1}|,
   relaxation slopes in [0, 1], intercepts <= the upper bounds), the biases and the concretisation; N is the
   operation count, the sum over the L layers of their input and output sizes (every sum of a layer, forward or
   backward, has fewer terms); the factor L + 1 covers the errors of the intermediate bounds, which enter every
   later relaxation, and 2 the second-order terms and the rounding of delta itself.

delta is tiny next to float32's errors (about 1e-10 relative to M_L on the networks here), so the certified set is
that of exact arithmetic up to margins of that size; the cost is one float64 copy of the model per call and one
float64 bound computation (the benchmark ``benchmarks/test_bench_bounds.py`` states the ratio).
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from .graph import Graph, Normalization, from_module
from .sets import Box, Ellipsoid, InputSet, per_sample

UNIT_ROUNDOFF = 2.0 ** -53  # float64


def float64_graph(model: nn.Module | Graph, normalize: Normalization | None) -> Graph:
    """The bound graph of a float64 copy of ``model`` (the model itself is left as it is)."""
    if isinstance(model, Graph):
        raise TypeError("sound bounds need the nn.Module (they convert a copy of it to float64), not a Graph")
    return from_module(copy.deepcopy(model).double(), normalize)


def outward_ball(x: torch.Tensor, eps: float | torch.Tensor, norm: str) -> InputSet:
    """The float64 set around ``x`` (float64) that contains the real ball of radius ``eps`` (Linf: intersected
    with [0, 1]; L2: not), its end points / radius rounded outwards."""
    e = per_sample(eps, x)
    if norm == "linf":
        lower = torch.nextafter(x - e, torch.full_like(x, -math.inf)).clamp(0, 1)
        upper = torch.nextafter(x + e, torch.full_like(x, math.inf)).clamp(0, 1)
        return Box.from_bounds(lower, upper)
    if norm == "l2":
        return Ellipsoid(x, torch.nextafter(e, torch.full_like(e, math.inf)).expand_as(x))
    raise ValueError(f"norm must be linf or l2, got {norm!r}")


def magnitudes(graph: Graph, region: InputSet) -> tuple[torch.Tensor, int]:
    """(M_L flattened (B, outputs), N): the magnitude bound through the absolute network and the operation count
    (module docstring)."""
    box = region.bounding_box()
    M = torch.maximum(box.lower_bound.abs(), box.upper_bound.abs())
    count = 0
    for layer in graph.layers:
        size_in = M[0].numel()
        if layer.nonlinear:
            low, up = layer.interval(-M, M)
            M = torch.maximum(low.abs(), up.abs())
        else:
            centre, radius = layer.interval(torch.zeros_like(M), M)
            M = centre.abs() + radius
        count += size_in + M[0].numel()
    return M.flatten(1), count


def rounding_margin(graph: Graph, region: InputSet, C: torch.Tensor) -> torch.Tensor:
    """delta (B, m) of the module docstring for the rows of ``C`` (B or 1, m, outputs)."""
    M, count = magnitudes(graph, region)
    scale = torch.einsum("bmk,bk->bm", C.abs().flatten(2).expand(len(M), -1, -1), M)
    return 2 * (len(graph) + 1) * count * UNIT_ROUNDOFF * scale


def sound_lower_bounds(model: nn.Module | Graph, x: torch.Tensor, eps: float | torch.Tensor, C: torch.Tensor,
                       norm: str, method: str, normalize: Normalization | None, lower: callable,
                       **options) -> torch.Tensor:
    """float64 lower bounds (B, m) of ``C @ f(x')`` over the real ball that hold in real arithmetic: the float64
    bound (``lower(graph, region, C, method, **options)``) minus the rounding margin."""
    graph = float64_graph(model, normalize)
    x64 = x.detach().double()
    region = outward_ball(x64, eps, norm)
    C64 = C.double()
    with torch.no_grad():
        return lower(graph, region, C64, method, **options) - rounding_margin(graph, region, C64)
