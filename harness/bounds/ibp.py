"""Interval bound propagation (Gowal et al. 2018, "On the effectiveness of interval bound propagation for
training verifiably robust models").

Affine layers map a box in centre/radius form as ``mu' = W mu + b``, ``r' = |W| r`` (eq. 6); the monotone
ReLU and max-pool map its end points (eq. 7).  The specification ``C`` is folded into the trailing affine
layers instead of being applied to the interval of the logits (sec. 3, "elision of the last layer"): the
minimum of ``C W z + C b`` over the last box is exact, where ``C (W [l, u] + b)`` is not.  When the network
ends with several affine layers (e.g. Linear then BatchNorm1d) all of them are folded, which is equally exact.

On an L2 ball (``Ellipsoid``) the first non-diagonal affine layer gives the exact half-width
``||W_i * r||_2`` of each output instead of ``|W| r``; diagonal layers before it (the input normalisation)
keep the set an ellipsoid; from there on the set is a box.
"""
from __future__ import annotations

import torch

from .backward import pull_back
from .graph import Graph
from .layers import Layer
from .sets import Box, Ellipsoid, InputSet


def interval_step(layer: Layer, region: InputSet) -> InputSet:
    """The image of ``region`` under one layer: eq. 6 for affine layers, eq. 7 for ReLU/max-pool."""
    if layer.nonlinear:
        box = region.bounding_box()
        return Box.from_bounds(*layer.interval(box.lower_bound, box.upper_bound))
    if layer.diagonal:
        return type(region)(*layer.interval(region.centre, region.radius))
    if isinstance(region, Ellipsoid):
        return Box(layer.forward(region.centre), layer.l2_radius(region.radius))
    return Box(*layer.interval(region.centre, region.radius))


def interval_bounds(graph: Graph, region: InputSet, stop: int) -> tuple[dict[int, Box], InputSet]:
    """Propagate ``region`` through ``graph.layers[:stop]``: the box at the input of every nonlinear layer
    (by layer index) and the set after the last one propagated."""
    pre: dict[int, Box] = {}
    for index, layer in enumerate(graph.layers[:stop]):
        if layer.nonlinear:
            pre[index] = region.bounding_box()
        region = interval_step(layer, region)
    return pre, region


def ibp_lower(graph: Graph, region: InputSet, C: torch.Tensor, shapes: list[torch.Size]) -> tuple[dict[int, Box], torch.Tensor]:
    """IBP lower bounds of ``C @ f(x)`` over ``region`` (``C``: (B, m, outputs)), with the trailing affine
    layers elided (sec. 3), and the intermediate boxes at the inputs of the nonlinear layers (eq. 6-7)."""
    start = graph.affine_tail_start()
    pre, last = interval_bounds(graph, region, start)
    return pre, last.lower(*pull_back(graph, C, len(graph), shapes, {}, start))
