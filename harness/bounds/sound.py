"""Margin lower bounds that hold under floating-point arithmetic (``margin_bounds(..., sound=True)``).

The bounds of IBP (Gowal et al. 2018), CROWN (Zhang et al. 2018) and CROWN-IBP (Zhang et al. 2020) are proved for
real arithmetic; computed in float32 they carry rounding errors of about 1e-6 of the magnitudes summed, in either
direction, so a float32 lower bound can exceed the minimum the network (with exactly its float32 weights) attains
on the ball.  A margin certified within that distance of 0 is not a certificate.  Here the bounds are made rigorous
for the real-arithmetic network with the model's weights over the real ball, by error accounting in float64:

* everything runs in float64 (float32 weights and images convert exactly); the input box is rounded outwards
  (``torch.nextafter``) so that it contains the real Linf ball (the L2 radius likewise);
* every step of the three methods is followed by a bound on its own rounding error, from the standard forward
  error bound of a sum of n products, |fl(sum) - sum| <= gamma_n sum |terms|, gamma_n ~ n u, u = 2^-53 (Higham,
  "Accuracy and Stability of Numerical Algorithms", 2nd ed., sec. 3.1), taken twice over (``gamma``: the
  second-order terms and the rounding of the error bound itself are far below the doubling):
  - interval steps (IBP, eq. 6-7; the intermediate boxes of CROWN-IBP): each box is widened by gamma_n T, with
    T = |W| M + |b| the magnitude of the layer's terms and M = |centre| + radius of the box it came from; end
    points and centre/radius forms are rounded outwards where they round (Knuth's TwoSum tells exactly where:
    a ReLU's 0 stays 0), so that every box encloses the real reachable set by induction and no error is
    amplified downstream (each enclosure is valid in its own right);
  - backward steps (CROWN, Theorem 3.2; the pull-back of IBP's elided last layers): the step through layer k
    with functionals A costs at most gamma_{n+L+10} <|A|, T_k> (n the layer's output size: every sum of the
    step has fewer terms; L + 10 covers the additions of the offsets and the rounding of the relaxation lines,
    which fail by at most a few ulps of M on the enclosures), subtracted from the bound, and the concretisation
    gamma_{n+L+10} (<|A|, M_0> + |offset|);
  - CROWN's intermediate bounds are lowered the same way before they become boxes; the relaxations are those of
    the enclosures (max-pool's element is chosen on the float64 box: any choice is sound, and the enclosure
    would break ties between equal lower bounds differently).

The margin taken off is thus about 1e-15 of the magnitudes actually summed (on the digits CNNs the sound bounds
lie within 5e-9 of the float64 ones, the float32 ones up to 5e-4 away): the certified set is that of exact
arithmetic up to margins of that size.  The cost is a float64 copy of the model per call, the float64 pass and the
enclosures (``benchmarks/test_bench_bounds.py`` states the ratio).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn

from .backward import LowerSlope, MaxPoolRelaxation, Relaxation, pull_back, relaxation, windows
from .crown import identity_rows
from .graph import Graph, Normalization, from_module
from .ibp import interval_bounds
from .layers import MaxPool
from .sets import Box, Ellipsoid, InputSet, dot, per_sample

UNIT_ROUNDOFF = 2.0 ** -53  # float64


def gamma(n: int) -> float:
    """Twice the first-order gamma_n = n u of a sum of n products (module docstring)."""
    return 2 * (n + 2) * UNIT_ROUNDOFF


def exact_sum(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(a + b rounded, whether the rounding was exact): Knuth's TwoSum recovers the error exactly."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb) == 0


def outward(lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    down, up = torch.full_like(lower, -math.inf), torch.full_like(upper, math.inf)
    return torch.nextafter(lower, down), torch.nextafter(upper, up)


def enclosing_box(lower: torch.Tensor, upper: torch.Tensor) -> Box:
    """A box that contains [lower, upper] although its centre/radius form may round (by an ulp at most): widened
    where it did (halving is exact), kept where it did not (0 stays 0 after a ReLU, say)."""
    total, exact_total = exact_sum(upper, lower)
    width, exact_width = exact_sum(upper, -lower)
    centre, radius = total / 2, width / 2
    return Box(centre, torch.where(exact_total & exact_width, radius,
                                   radius + gamma(1) * (centre.abs() + radius)))


def end_points(box: Box) -> tuple[torch.Tensor, torch.Tensor]:
    """The box's end points, rounded outwards where they round."""
    (lower, exact_lower), (upper, exact_upper) = exact_sum(box.centre, -box.radius), exact_sum(box.centre, box.radius)
    low, up = outward(lower, upper)
    return torch.where(exact_lower, lower, low), torch.where(exact_upper, upper, up)


def magnitude(region: InputSet) -> torch.Tensor:
    """A bound on |z| over the set (per element)."""
    box = region.bounding_box()
    return (box.centre.abs() + box.radius) * (1 + gamma(1))


def outward_ball(x: torch.Tensor, eps: float | torch.Tensor, norm: str) -> InputSet:
    """The float64 set around ``x`` (float64) that contains the real ball of radius ``eps`` (Linf: intersected
    with [0, 1]; L2: not)."""
    e = per_sample(eps, x)
    if norm == "linf":
        lower, upper = outward(x - e, x + e)
        return enclosing_box(lower.clamp(0, 1), upper.clamp(0, 1))
    if norm == "l2":
        return Ellipsoid(x, torch.nextafter(e, torch.full_like(e, math.inf)).expand_as(x))
    raise ValueError(f"norm must be linf or l2, got {norm!r}")


class Enclosures:
    """Interval bounds (Gowal et al. 2018, eq. 6-7) widened by their rounding error at every layer: ``inputs[i]``
    encloses the real set entering layer i, ``terms[i]`` bounds the magnitude of layer i's output terms (affine:
    |W| M + |b|; nonlinear: the output's magnitude, which also bounds the relaxation's intercepts)."""

    def __init__(self, graph: Graph, region: InputSet, stop: int | None = None):
        self.inputs: dict[int, InputSet] = {}
        self.terms: dict[int, torch.Tensor] = {}
        s = region
        for i, layer in enumerate(graph.layers[:len(graph) if stop is None else stop]):
            self.inputs[i] = s
            M = magnitude(s)
            if layer.nonlinear:  # the output's magnitude (ReLU: M; max-pool: the window maxima of M)
                self.terms[i] = torch.maximum(*(v.abs() for v in layer.interval(-M, M)))
                s = enclosing_box(*layer.interval(*end_points(s.bounding_box())))
                continue
            shift, scaled = layer.interval(torch.zeros_like(M), M)
            T = self.terms[i] = shift.abs() + scaled
            n = M[0].numel()
            if isinstance(s, Ellipsoid) and layer.diagonal:
                s = self.scaled_ellipsoid(layer, s, T)
            elif isinstance(s, Ellipsoid):
                s = Box(layer.forward(s.centre), layer.l2_radius(s.radius) + gamma(n) * T)
            else:
                centre, radius = layer.interval(s.centre, s.radius)
                s = Box(centre, radius + gamma(n) * T)
        self.output = s

    @staticmethod
    def scaled_ellipsoid(layer, s: Ellipsoid, T: torch.Tensor) -> InputSet:
        """A diagonal layer's image of an ellipsoid, enlarged to hold the real one: a centre off by at most e and
        radii off by a relative gamma_1 fit in radius * (1 + gamma_1 + ||e / radius||_2)."""
        centre, radius = layer.interval(s.centre, s.radius)
        if (radius <= 0).any():  # a degenerate axis: its bounding box, widened, encloses it
            return Box(centre, radius * (1 + gamma(1)) + gamma(1) * T)
        stretch = 1 + gamma(1) + torch.linalg.vector_norm((gamma(1) * T / radius).flatten(1), dim=1)
        return Ellipsoid(centre, radius * (stretch * (1 + gamma(1))).view(-1, *[1] * (radius.dim() - 1)))


def sound_relaxation(layer, box: Box, plain: Box, lower_slope: LowerSlope) -> Relaxation:
    """The layer's relaxation (``backward.relaxation``) valid on the enclosure ``box``.  Max-pool picks its
    element j on the float64 box ``plain`` (any j gives a valid lower line; equal lower bounds, as dead ReLUs
    leave, would otherwise tie differently on the widened box), its exactness and upper line on ``box``."""
    if not isinstance(layer, MaxPool):
        return relaxation(layer, box, lower_slope)
    lower, upper = (windows(layer, v) for v in end_points(box))
    index = windows(layer, plain.lower_bound).max(2, keepdim=True)[1]
    select = torch.zeros_like(lower).scatter_(2, index, 1.0)
    others = upper.masked_fill(select.bool(), float("-inf")).amax(2)
    return MaxPoolRelaxation(layer, select, lower.gather(2, index).squeeze(2) >= others, upper.amax(2))


class Errors:
    """The rounding error (B, m) of one backward pass: ``monitor`` is ``pull_back``'s hook (module docstring)."""

    def __init__(self, enclosures: Enclosures, shapes: list[torch.Size], layers: int):
        self.enclosures, self.shapes, self.extra = enclosures, shapes, layers + 10
        self.total: torch.Tensor | float = 0.0

    def monitor(self, index: int, A: torch.Tensor) -> None:
        n = math.prod(self.shapes[index + 1])
        self.total = self.total + gamma(n + self.extra) * dot(A.abs(), self.enclosures.terms[index])

    def lower(self, region: InputSet, A: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The sound minimum of ``A x + bias`` over ``region`` (its float64 value minus every error of the pass),
        and the float64 value."""
        n = A[0, 0].numel()
        size = dot(A.abs(), magnitude(region)) + (0.0 if bias is None else bias.abs())
        value = region.lower(A, bias)
        return value - self.total - gamma(n + self.extra) * size, value


def sound_pass(graph: Graph, enclosures: Enclosures, region: InputSet, A: torch.Tensor, stop: int,
               shapes: list[torch.Size], relaxations: dict[int, Relaxation], start: int = 0,
               plain: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Sound lower bounds of ``A z_stop`` over ``region`` (the set entering layer ``start``); ``plain``: and
    the float64 ones."""
    errors = Errors(enclosures, shapes, len(graph))
    A, bias = pull_back(graph, A, stop, shapes, relaxations, start, monitor=errors.monitor)
    sound, value = errors.lower(region, A, bias)
    return (sound, value) if plain else sound


def sound_ibp(graph: Graph, region: InputSet, C: torch.Tensor, shapes: list[torch.Size]) -> torch.Tensor:
    """IBP with the trailing affine layers elided (``ibp.ibp_lower``), soundly."""
    start = graph.affine_tail_start()
    enc = Enclosures(graph, region)
    return sound_pass(graph, enc, enc.inputs.get(start, enc.output), C, len(graph), shapes, {}, start)


def sound_crown_ibp(graph: Graph, region: InputSet, C: torch.Tensor, shapes: list[torch.Size],
                    lower_slope: LowerSlope = "adaptive", beta: float = 1.0) -> torch.Tensor:
    """CROWN-IBP (``crown.crown_ibp_lower``) on the enclosures, soundly; the mix with IBP as there."""
    if not 0 <= beta <= 1:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    enc = Enclosures(graph, region)
    start = graph.affine_tail_start()
    tail = enc.inputs.get(start, enc.output)
    ibp = sound_pass(graph, enc, tail, C, len(graph), shapes, {}, start) if beta < 1 else None
    if beta == 0:
        return ibp
    plain = interval_bounds(graph, region, start)[0]
    relaxations = {i: sound_relaxation(graph.layers[i], enc.inputs[i].bounding_box(), box, lower_slope)
                   for i, box in plain.items()}
    lower = sound_pass(graph, enc, region, C, len(graph), shapes, relaxations)
    if ibp is None:
        return lower
    return beta * lower + (1 - beta) * ibp - gamma(2) * (lower.abs() + ibp.abs())


def sound_crown(graph: Graph, region: InputSet, C: torch.Tensor, shapes: list[torch.Size],
                lower_slope: LowerSlope = "adaptive", intersect_ibp: bool = False) -> torch.Tensor:
    """CROWN with CROWN intermediate bounds (``crown.crown_lower``), each lowered by its error, soundly."""
    enc = Enclosures(graph, region)
    boxes: dict[int, tuple[Box, Box]] = {}  # (enclosure, float64 box)
    relaxations: dict[int, Relaxation] = {}
    for index, layer in enumerate(graph.layers):
        if not layer.nonlinear:
            continue
        if index > 0 and graph.layers[index - 1].nonlinear:
            before, plain = boxes[index - 1]
            box = enclosing_box(*graph.layers[index - 1].interval(*end_points(before)))
            plain = Box.from_bounds(*graph.layers[index - 1].interval(plain.lower_bound, plain.upper_bound))
        else:
            shape, batch = shapes[index], len(region.centre)
            n = math.prod(shape)
            low, value = sound_pass(graph, enc, region, identity_rows(shape, region.centre), index, shapes,
                                    relaxations, plain=True)
            box = enclosing_box(low[:, :n].view(batch, *shape), -low[:, n:].view(batch, *shape))
            plain = Box.from_bounds(value[:, :n].view(batch, *shape), -value[:, n:].view(batch, *shape))
        if intersect_ibp:
            ibp = enc.inputs[index].bounding_box()
            (l1, u1), (l2, u2) = end_points(box), end_points(ibp)
            box = enclosing_box(torch.maximum(l1, l2), torch.minimum(u1, u2))
            plain = Box.from_bounds(torch.maximum(plain.lower_bound, l2), torch.minimum(plain.upper_bound, u2))
        boxes[index] = (box, plain)
        relaxations[index] = sound_relaxation(layer, box, plain, lower_slope)
    return sound_pass(graph, enc, region, C, len(graph), shapes, relaxations)


def sound_lower_bounds(model: nn.Module | Graph, x: torch.Tensor, eps: float | torch.Tensor, C: torch.Tensor,
                       norm: str, method: str, normalize: Normalization | None,
                       checked: Callable[..., None], **options) -> torch.Tensor:
    """float64 lower bounds (B, m) of ``C @ f(x')`` over the real ball that hold in real arithmetic.
    ``checked(graph, region, C, method, **options)`` validates the arguments as ``lower_bounds`` does."""
    if isinstance(model, Graph):
        raise TypeError("sound bounds need the nn.Module (they convert a copy of it to float64), not a Graph")
    graph = from_module(copy.deepcopy(model).double(), normalize)
    x64 = x.detach().double()
    region = outward_ball(x64, eps, norm)
    shapes = graph.shapes(x64)
    C64 = C.detach().double().reshape(*C.shape[:2], *shapes[-1])
    checked(graph, region, C64, method, **options)
    with torch.no_grad():
        if method == "ibp":
            return sound_ibp(graph, region, C64, shapes)
        if method == "crown":
            return sound_crown(graph, region, C64, shapes, **options)
        return sound_crown_ibp(graph, region, C64, shapes, **options)
