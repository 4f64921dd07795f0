"""CROWN and CROWN-IBP: linear bounds propagated backward from the specification.

* CROWN (Zhang et al. 2018, "Efficient neural network robustness certification with general activation
  functions", Theorem 3.2 and Corollary 3.3): the bounds at the input of every nonlinear layer are computed
  by CROWN itself, one backward pass from that layer per layer in order (the relaxations of the earlier
  layers are then known), and a last backward pass from ``C``.  Its cost grows with the number of neurons
  feeding a nonlinear layer (one pair of functionals per neuron), so it is meant for small networks.
* CROWN-IBP (Zhang et al. 2020, "Towards stable and efficient training of verifiably robust neural
  networks", sec. 3): IBP bounds for every intermediate layer, one CROWN backward pass from ``C``; and the
  training mix ``beta * CROWN-IBP + (1 - beta) * IBP`` of the two lower bounds (beta = 0 is IBP, as the
  paper's and A5's code use at test time).

All functions return *lower* bounds (B, m) of ``C z`` for ``C`` of shape (B, m, outputs), or (1, m, outputs)
for one specification shared by all samples; an upper bound is minus the lower bound of ``-C``.
"""
from __future__ import annotations

import math

import torch

from .backward import LowerSlope, Relaxation, pull_back, relaxation
from .graph import Graph
from .ibp import interval_bounds, interval_step
from .sets import Box, InputSet


def identity_rows(shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    """``[I; -I]`` over the neurons of one sample, shared by the batch, (1, 2n, *shape): lower bounds of
    every neuron and of its negation (minus its upper bound) in one backward pass."""
    n = math.prod(shape)
    eye = torch.eye(n, dtype=like.dtype, device=like.device)
    return torch.cat([eye, -eye]).view(1, 2 * n, *shape)


def crown_box(graph: Graph, region: InputSet, index: int, shapes: list[torch.Size],
              relaxations: dict[int, Relaxation]) -> Box:
    """CROWN bounds of the input of layer ``index`` over ``region`` (Theorem 3.2 from that layer)."""
    shape = shapes[index]
    n = math.prod(shape)
    low = region.lower(*pull_back(graph, identity_rows(shape, region.centre), index, shapes, relaxations))
    batch = low.shape[0]
    return Box.from_bounds(low[:, :n].view(batch, *shape), -low[:, n:].view(batch, *shape))


def intersect(a: Box, b: Box) -> Box:
    return Box.from_bounds(torch.maximum(a.lower_bound, b.lower_bound), torch.minimum(a.upper_bound, b.upper_bound))


def crown_lower(graph: Graph, region: InputSet, C: torch.Tensor, shapes: list[torch.Size], lower_slope: LowerSlope = "adaptive",
          intersect_ibp: bool = False) -> torch.Tensor:
    """CROWN lower bounds of ``C f(x)`` over ``region`` (Zhang et al. 2018, Theorem 3.2; Corollary 3.3 for
    the L2 ball), intermediate bounds by CROWN layer by layer.

    A nonlinear layer fed directly by another (ReLU then max-pool) takes the interval image of the first
    one's input bounds: CROWN from there gives the same box.  ``intersect_ibp`` intersects every
    intermediate box with the plain IBP box (sound, sometimes tighter; what ``bound_propagation``'s
    ``crown`` does; the paper and auto_LiRPA do not)."""
    ibp_boxes = interval_bounds(graph, region, len(graph))[0] if intersect_ibp else {}
    boxes: dict[int, Box] = {}
    relaxations: dict[int, Relaxation] = {}
    for index, layer in enumerate(graph.layers):
        if not layer.nonlinear:
            continue
        if index > 0 and graph.layers[index - 1].nonlinear:
            box = interval_step(graph.layers[index - 1], boxes[index - 1]).bounding_box()
        else:
            box = crown_box(graph, region, index, shapes, relaxations)
        if index in ibp_boxes:
            box = intersect(box, ibp_boxes[index])
        boxes[index] = box
        relaxations[index] = relaxation(layer, box, lower_slope)
    return region.lower(*pull_back(graph, C, len(graph), shapes, relaxations))


def crown_ibp_mix(crown_ibp_bound: torch.Tensor, ibp_bound: torch.Tensor, beta: float) -> torch.Tensor:
    """``beta * crown_ibp_bound + (1 - beta) * ibp_bound`` (Zhang et al. 2020, sec. 3: the bound CROWN-IBP
    trains on, beta ramped from 1 to 0); a convex combination of two lower bounds is one."""
    return beta * crown_ibp_bound + (1 - beta) * ibp_bound


def crown_ibp_lower(graph: Graph, region: InputSet, C: torch.Tensor, shapes: list[torch.Size], lower_slope: LowerSlope = "adaptive",
              beta: float = 1.0) -> torch.Tensor:
    """CROWN-IBP lower bounds of ``C f(x)`` (Zhang et al. 2020, sec. 3): IBP boxes (Gowal et al. 2018,
    eq. 6-7) relax every nonlinear layer, one CROWN backward pass from ``C`` (Zhang et al. 2018,
    Theorem 3.2); mixed with the IBP bound (last layer elided) by ``crown_ibp_mix`` when ``beta < 1``."""
    if not 0 <= beta <= 1:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    start = graph.affine_tail_start()
    boxes, last = interval_bounds(graph, region, start)
    ibp_bound = last.lower(*pull_back(graph, C, len(graph), shapes, {}, start)) if beta < 1 else None
    if beta == 0:
        return ibp_bound
    relaxations = {index: relaxation(graph.layers[index], box, lower_slope) for index, box in boxes.items()}
    lower = region.lower(*pull_back(graph, C, len(graph), shapes, relaxations))
    return lower if ibp_bound is None else crown_ibp_mix(lower, ibp_bound, beta)
