"""Sound output bounds of a network over a set of inputs: IBP, CROWN and CROWN-IBP.

A small, exact, self-contained bound-propagation engine (it imports only torch and the floor), batched, device- and
dtype-agnostic and differentiable end to end (certified training backpropagates through it).

    lb, ub = bounds(model, x_lower, x_upper, C, method="crown")          # C @ logits over a box
    lb, ub = ball_bounds(model, x, eps, norm="l2", method="ibp")          # logits over a ball
    m = margin_bounds(model, x, y, eps, norm="linf", method="crown-ibp")  # (B, classes - 1) lower bounds
    ok = certified(model, x, y, eps, method="crown")                      # (B,) bool

Input sets: a box ``[x_lower, x_upper]`` per sample; ``norm="linf"`` is the Linf ball intersected with
[0, 1]; ``norm="l2"`` is the L2 ball *without* the [0, 1] intersection (a superset: sound, possibly looser).

Methods (``method=``):

* ``"ibp"``: interval bound propagation, Gowal et al. 2018 (eq. 6-7), the specification folded into the
  trailing affine layers (sec. 3); on an L2 ball the first affine layer uses ``||W_i||_2 eps``.
* ``"crown"``: CROWN, Zhang et al. 2018 (Theorem 3.2, Corollary 3.3), every intermediate bound by CROWN.
  Options: ``lower_slope`` ("adaptive", "same-slope" or a number in [0, 1]) and ``intersect_ibp``.
* ``"crown-ibp"``: CROWN-IBP, Zhang et al. 2020 (sec. 3): IBP intermediate bounds, one CROWN pass.
  Options: ``lower_slope`` and ``beta`` (the bound ``beta * CROWN-IBP + (1 - beta) * IBP``).

Floating point: the bounds are computed in the input's dtype and are sound for real arithmetic only up to its
rounding (a float32 bound can pass an attained value by a few 1e-6).  ``margin_bounds(..., sound=True)`` and
``certified(..., sound=True)`` recompute them in float64 and subtract a bound on the rounding error derived from the
operation count (``sound.py``): rigorous certificates, which the certifiers report by default.

Layers: see ``graph.py`` (Linear, Conv2d, eval BatchNorm, AvgPool2d, MaxPool2d, ReLU, Flatten, Identity,
Dropout, Sequential, ``features`` + ``classifier`` modules, in-model normalisation).  CROWN relaxes
max-pool with the element of largest lower bound (see ``backward.py``); residual connections are not
supported.  ``model`` may also be a ``Graph`` from ``from_module``.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .backward import LowerSlope
from .crown import crown_ibp_lower, crown_ibp_mix, crown_lower
from .graph import Graph, Normalization, from_module
from .ibp import ibp_lower
from .sets import Box, Ellipsoid, InputSet, l2_ball, linf_ball
from .sound import sound_lower_bounds

METHODS = ("ibp", "crown", "crown-ibp")
NORMS = ("linf", "l2")

__all__ = ["METHODS", "NORMS", "Box", "Ellipsoid", "Graph", "ball_bounds", "bounds", "certified", "crown_ibp_mix",
           "from_module", "l2_ball", "linf_ball", "lower_bounds", "margin_bounds", "margin_matrix", "region_bounds"]


def lower_bounds(graph: Graph, region: InputSet, C: torch.Tensor, method: str = "ibp", *,
                 lower_slope: LowerSlope = "adaptive", beta: float = 1.0, intersect_ibp: bool = False) -> torch.Tensor:
    """Lower bounds (B, m) of ``C @ f(x)`` over ``region`` for ``C`` of shape (B, m, outputs) (or (1, m,
    outputs), shared by all samples), the outputs flattened when the network's are not a vector."""
    shapes = graph.shapes(region.centre)
    if C.shape[-1] != math.prod(shapes[-1]):
        raise ValueError(f"C has shape {tuple(C.shape)} but the network outputs {tuple(shapes[-1])} per sample")
    C = C.reshape(*C.shape[:2], *shapes[-1])
    check_method(graph, region, C, method, beta=beta, intersect_ibp=intersect_ibp)
    if method == "ibp":
        return ibp_lower(graph, region, C, shapes)[1]
    if method == "crown":
        return crown_lower(graph, region, C, shapes, lower_slope, intersect_ibp)
    return crown_ibp_lower(graph, region, C, shapes, lower_slope, beta)


def check_method(graph: Graph, region: InputSet, C: torch.Tensor, method: str, *, beta: float = 1.0,
                 intersect_ibp: bool = False, lower_slope: LowerSlope = "adaptive") -> None:
    """ValueError unless ``method`` is known and takes the options given."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if beta != 1.0 and method != "crown-ibp":
        raise ValueError("beta mixes CROWN-IBP with IBP; it needs method='crown-ibp'")
    if intersect_ibp and method != "crown":
        raise ValueError("intersect_ibp applies to method='crown'")


def specification(C: torch.Tensor | None, outputs: int, like: torch.Tensor) -> torch.Tensor:
    """``C`` as (B, m, outputs), or (1, m, outputs) when one (m, outputs) matrix serves every sample (cheaper:
    nothing per sample until the first nonlinear layer); the identity (plain output bounds) when ``None``."""
    if C is None:
        C = torch.eye(outputs, dtype=like.dtype, device=like.device)
    C = C.to(dtype=like.dtype, device=like.device)
    return C.unsqueeze(0) if C.dim() == 2 else C


def region_bounds(model: nn.Module | Graph, region: InputSet, C: torch.Tensor | None = None, method: str = "ibp", *,
                  normalize: Normalization | None = None, **options: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper bounds (B, m) of ``C @ f(x)`` over ``region`` (a ``Box`` or ``Ellipsoid``); the
    (flattened) outputs themselves when ``C`` is None.  ``options``: those of ``lower_bounds``."""
    graph = from_module(model, normalize)
    outputs = math.prod(graph.shapes(region.centre)[-1])
    rows = specification(C, outputs, region.centre)
    low = lower_bounds(graph, region, torch.cat([rows, -rows], 1), method, **options)
    m = rows.shape[1]
    return low[:, :m], -low[:, m:]


def bounds(model: nn.Module | Graph, x_lower: torch.Tensor, x_upper: torch.Tensor, C: torch.Tensor | None = None,
           method: str = "ibp", **options: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper bounds of ``C @ f(x)`` for every x with ``x_lower <= x <= x_upper`` (per sample)."""
    if (x_lower > x_upper).any():
        raise ValueError("x_lower exceeds x_upper somewhere: the box is empty")
    return region_bounds(model, Box.from_bounds(x_lower, x_upper), C, method, **options)


def ball(x: torch.Tensor, eps: float | torch.Tensor, norm: str) -> InputSet:
    if norm == "linf":
        return linf_ball(x, eps)
    if norm == "l2":
        return l2_ball(x, eps)
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def ball_bounds(model: nn.Module | Graph, x: torch.Tensor, eps: float | torch.Tensor, C: torch.Tensor | None = None,
                norm: str = "linf", method: str = "ibp", **options: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds of ``C @ f(x')`` over the ``norm`` ball of radius ``eps`` (a number or one per sample) around
    ``x``: Linf intersected with [0, 1], L2 not intersected."""
    return region_bounds(model, ball(x, eps, norm), C, method, **options)


def margin_matrix(y: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Rows ``e_y - e_j`` for every ``j != y``, (B, num_classes - 1, num_classes), ``j`` in increasing order."""
    others = torch.arange(num_classes - 1, device=y.device).expand(len(y), -1)
    others = others + (others >= y.unsqueeze(1)).long()
    eye = torch.eye(num_classes, dtype=dtype, device=y.device)
    return eye[y].unsqueeze(1) - eye[others]


def margin_bounds(model: nn.Module | Graph, x: torch.Tensor, y: torch.Tensor, eps: float | torch.Tensor,
                  norm: str = "linf", method: str = "ibp", *, normalize: Normalization | None = None,
                  sound: bool = False, **options: Any) -> torch.Tensor:
    """Lower bounds (B, classes - 1) of the margins ``f_y(x') - f_j(x')``, ``j != y``, over the ball
    (one pass: no upper bounds).  ``options``: those of ``lower_bounds``.  ``sound``: float64 bounds that hold
    under floating-point arithmetic (``sound.py``; not differentiable), else bounds in ``x``'s dtype."""
    graph = from_module(model, normalize)
    classes = math.prod(graph.shapes(x)[-1])
    C = margin_matrix(y, classes, x.dtype)
    if sound:
        return sound_lower_bounds(model, x, eps, C, norm, method, normalize, check_method, **options)
    return lower_bounds(graph, ball(x, eps, norm), C, method, **options)


def certified(model: nn.Module | Graph, x: torch.Tensor, y: torch.Tensor, eps: float | torch.Tensor,
              norm: str = "linf", method: str = "ibp", **options: Any) -> torch.Tensor:
    """Whether every margin lower bound is positive: ``y`` provably stays the prediction on the ball (with
    ``sound=True``, also under floating-point rounding: ``margin_bounds``)."""
    return (margin_bounds(model, x, y, eps, norm, method, **options) > 0).all(1)
