"""harness.bounds: IBP, CROWN and CROWN-IBP are sound, exact where exactness is known, equal to an
independent implementation (``bound_propagation`` 0.4.7, GPLv3, used here only) and differentiable.

Soundness: on a random net of every supported layer type and a briefly trained one, thousands of points of
the input set (uniform, box vertices / sphere points) and PGD points that minimise and maximise each margin
all lie inside [lb, ub].  Exactness: CROWN (and IBP with the specification elided) on purely affine nets
equal the closed-form minimum; a MILP gives the exact minimum margin of a tiny ReLU net.  Mean bound widths
are printed (``pytest -s``), not asserted.
"""
from __future__ import annotations

import math

import bound_propagation as bp
import numpy as np
import pytest
import torch
from scipy.optimize import Bounds, LinearConstraint, milp
from torch import nn

from harness import bounds as hb
from harness.bounds.backward import maxpool_relaxation, relu_relaxation
from harness.bounds.ibp import interval_bounds
from harness.bounds.layers import MaxPool
from harness.models.small import SmallCNN

METHODS = hb.METHODS
TOL = 1e-9  # float64 throughout, except the float32 test


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- networks

class DuckNormalized(nn.Module):
    """Shaped like harness.models.normalize.Normalized (mean/std buffers, normalize) + features/classifier."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1), persistent=False)
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(4 * 3 * 3, 10), nn.ReLU(), nn.Linear(10, 4))

    def normalize(self, x):
        return (x - self.mean) / self.std

    def forward(self, x):
        return self.classifier(self.features(self.normalize(x)))


def randomize_batchnorm(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(-1.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model


def trained_mlp() -> tuple[nn.Module, torch.Size]:
    """2-16-16-3 ReLU MLP, 200 Adam steps on three Gaussian blobs in the unit square."""
    g = torch.Generator().manual_seed(1)
    centres = torch.tensor([[0.25, 0.25], [0.75, 0.3], [0.5, 0.8]], dtype=torch.float64)
    labels = torch.arange(3).repeat(100)
    data = (centres[labels] + 0.08 * torch.randn(300, 2, generator=g, dtype=torch.float64)).clamp(0, 1)
    net = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)).double()
    opt = torch.optim.Adam(net.parameters(), lr=0.03)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(net(data), labels).backward()
        opt.step()
    return net, torch.Size([2])


def network(name: str) -> tuple[nn.Module, torch.Size]:
    """A small float64 network in eval mode and its per-sample input shape."""
    torch.manual_seed(0)
    if name == "trained_mlp":
        net, shape = trained_mlp()
        return net.eval(), shape
    nets = {
        "mlp": (nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Dropout(0.5),
                              nn.Sequential(nn.Linear(12, 12), nn.ReLU(), nn.Identity()), nn.Linear(12, 5)), (1, 4, 4)),
        "conv": (nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.ReLU(),
                               nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2), nn.ReLU(), nn.Flatten(),
                               nn.Linear(36, 10), nn.ReLU(), nn.Linear(10, 5)), (2, 6, 6)),
        "batchnorm": (nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2),
                                    nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.Linear(24, 10), nn.BatchNorm1d(10),
                                    nn.ReLU(), nn.Linear(10, 5)), (2, 6, 6)),
        "avgpool": (nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(4, 4, 3, padding=1),
                                  nn.ReLU(), nn.AvgPool2d(3, stride=1, padding=1), nn.Flatten(), nn.Linear(36, 5)), (2, 6, 6)),
        "maxpool": (nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1),
                                  nn.Conv2d(4, 4, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(),
                                  nn.Linear(16, 5)), (2, 7, 7)),
        "small_cnn": (SmallCNN(num_classes=5, in_channels=1, image_size=8, width=4), (1, 8, 8)),
        "normalized": (DuckNormalized(), (3, 6, 6)),
    }
    net, shape = nets[name]
    return randomize_batchnorm(net).double().eval(), torch.Size(shape)


NETWORKS = ["mlp", "conv", "batchnorm", "avgpool", "maxpool", "small_cnn", "normalized", "trained_mlp"]
EPS = {"linf": 0.08, "l2": 0.4}


def inputs(shape: torch.Size, batch: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---------------------------------------------------------------- points of the input set

def region_points(region: hb.Box | hb.Ellipsoid, n: int) -> torch.Tensor:
    """(B, n, *shape): half uniform in the set, half on its extreme points (box vertices / the sphere)."""
    c, r = region.centre, region.radius
    g = torch.Generator().manual_seed(2)
    if isinstance(region, hb.Box):
        u = torch.rand(c.shape[0], n, *c.shape[1:], generator=g, dtype=c.dtype)
        u[:, n // 2:] = u[:, n // 2:].round()
        return (c - r).unsqueeze(1) + 2 * r.unsqueeze(1) * u
    d = math.prod(c.shape[1:])
    direction = torch.randn(c.shape[0], n, d, generator=g, dtype=c.dtype)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    radius = torch.rand(c.shape[0], n, 1, generator=g, dtype=c.dtype) ** (1 / d)
    radius[:, n // 2:] = 1
    return c.unsqueeze(1) + r.unsqueeze(1) * (radius * direction).view(c.shape[0], n, *c.shape[1:])


def project(z: torch.Tensor, region: hb.Box | hb.Ellipsoid) -> torch.Tensor:
    """Project (B, k, *shape) points onto each sample's set."""
    c, r = region.centre.unsqueeze(1), region.radius.unsqueeze(1)
    if isinstance(region, hb.Box):
        return torch.maximum(torch.minimum(z, c + r), c - r)
    delta = (z - c) / r
    norm = delta.flatten(2).norm(dim=-1).clamp_min(1.0).view(*delta.shape[:2], *([1] * (delta.dim() - 2)))
    return c + r * delta / norm


def pgd_points(model: nn.Module, region, C: torch.Tensor, steps: int = 10) -> torch.Tensor:
    """(B, 2m, *shape): for each row of ``C``, PGD from a random point minimising and maximising it."""
    rows = torch.cat([C, -C], 1)
    k = rows.shape[1]
    z = project(region_points(region, 2 * k)[:, :k], region)  # random interior starts
    alpha = 2.5 * region.radius.unsqueeze(1) / steps
    for _ in range(steps):
        z = z.detach().requires_grad_(True)
        out = model(z.flatten(0, 1)).view(*z.shape[:2], -1)
        (grad,) = torch.autograd.grad((rows * out).sum(), z)
        if isinstance(region, hb.Box):
            step = grad.sign()
        else:
            step = grad / grad.flatten(2).norm(dim=-1).clamp_min(1e-12).view(*grad.shape[:2], *([1] * (grad.dim() - 2)))
        z = project(z - alpha * step, region)
    return z.detach()


def values(model: nn.Module, points: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """(B, n, m): ``C @ f(x)`` at every point."""
    with torch.no_grad():
        out = model(points.flatten(0, 1)).view(*points.shape[:2], -1)
    return torch.einsum("bmk,bnk->bnm", C, out)


def assert_inside(v: torch.Tensor, lb: torch.Tensor, ub: torch.Tensor, what: str):
    tol = TOL * (1 + v.abs())
    assert (v >= lb.unsqueeze(1) - tol).all(), f"{what}: a point below the lower bound by {(lb.unsqueeze(1) - v).max():.3g}"
    assert (v <= ub.unsqueeze(1) + tol).all(), f"{what}: a point above the upper bound by {(v - ub.unsqueeze(1)).max():.3g}"


# ---------------------------------------------------------------- soundness

@pytest.mark.parametrize("name", NETWORKS)
def test_sound_on_sampled_and_pgd_points(name):
    model, shape = network(name)
    x = inputs(shape)
    graph = hb.from_module(model)
    assert torch.allclose(graph.forward(x), model(x), atol=1e-12)
    y = model(x).argmax(1)
    classes = model(x).shape[1]
    C = hb.margin_matrix(y, classes, torch.float64)
    widths = []
    for norm in hb.NORMS:
        region = hb.linf_ball(x, EPS[norm]) if norm == "linf" else hb.l2_ball(x, EPS[norm])
        v = torch.cat([values(model, region_points(region, 2000), C), values(model, pgd_points(model, region, C), C)], 1)
        for method in METHODS:
            lb, ub = hb.ball_bounds(model, x, EPS[norm], C, norm=norm, method=method)
            assert_inside(v, lb, ub, f"{name} {norm} {method}")
            # the same bound by two routes; float64 kernels may order sums differently per CPU (seen: last bits)
            assert torch.allclose(hb.margin_bounds(model, x, y, EPS[norm], norm, method), lb, rtol=1e-10, atol=1e-10)
            widths.append(f"{norm} {method} {(ub - lb).mean():.4g}")
        logits = torch.eye(classes, dtype=torch.float64).expand(len(x), -1, -1)
        lo, up = hb.ball_bounds(model, x, EPS[norm], norm=norm, method="crown-ibp")
        assert_inside(values(model, region_points(region, 500), logits), lo, up, f"{name} {norm} logits")
    print(f"\n[bounds] {name}: mean margin-bound width " + ", ".join(widths))


def test_sound_with_fixed_lower_slopes_and_intersection():
    model, shape = network("maxpool")
    x = inputs(shape)
    y = model(x).argmax(1)
    region = hb.linf_ball(x, EPS["linf"])
    C = hb.margin_matrix(y, 5, torch.float64)
    v = torch.cat([values(model, region_points(region, 2000), C), values(model, pgd_points(model, region, C), C)], 1)
    for slope in (0, 1, 0.3, "same-slope", "adaptive"):
        for method, options in (("crown", {"intersect_ibp": True}), ("crown", {}), ("crown-ibp", {"beta": 0.5})):
            lb, ub = hb.region_bounds(model, region, C, method, lower_slope=slope, **options)
            assert_inside(v, lb, ub, f"{method} slope {slope} {options}")


def test_float32_and_per_sample_eps():
    model, shape = network("small_cnn")
    model = model.float()
    x = inputs(shape).float()
    y = model(x).argmax(1)
    eps = torch.tensor([0.0, 0.02, 0.05, 0.1])
    for method in METHODS:
        lb = hb.margin_bounds(model, x, y, eps, "linf", method)
        assert lb.dtype == torch.float32
        one_by_one = torch.cat([hb.margin_bounds(model, x[i:i + 1], y[i:i + 1], float(eps[i]), "linf", method)
                                for i in range(len(x))])
        assert torch.allclose(lb, one_by_one, atol=1e-5)
        region = hb.linf_ball(x, eps)
        C = hb.margin_matrix(y, 5)
        v = values(model, region_points(region, 1000), C)
        assert (v >= lb.unsqueeze(1) - 1e-4).all()


@pytest.mark.parametrize("method", METHODS)
def test_zero_radius_is_the_network(method):
    model, shape = network("batchnorm")
    x = inputs(shape)
    y = model(x).argmax(1)
    C = hb.margin_matrix(y, 5, torch.float64)
    lb, ub = hb.ball_bounds(model, x, 0.0, C, method=method)
    exact = torch.einsum("bmk,bk->bm", C, model(x))
    assert torch.allclose(lb, exact, atol=1e-10) and torch.allclose(ub, exact, atol=1e-10)
    assert hb.certified(model, x, y, 0.0, method=method).all()



@pytest.mark.parametrize("layer", ["relu", "maxpool_overlapping", "maxpool"])
def test_relaxation_lines_enclose_the_layer(layer):
    """The linear lines of ReLU (every lower slope) and max-pool hold at points of the box, vertices included:
    ``A' v + bias <= A g(v)`` for ``A = [I; -I]`` (lower and minus upper line of every output)."""
    g = torch.Generator().manual_seed(9)
    shape = torch.Size([3, 6, 6])
    centre = torch.randn(4, *shape, generator=g, dtype=torch.float64)
    radius = torch.rand(4, *shape, generator=g, dtype=torch.float64) * torch.rand(4, 3, 1, 1, generator=g, dtype=torch.float64)
    box = hb.Box(centre, radius)
    points = region_points(box, 400)
    if layer == "relu":
        module, cases = nn.ReLU(), [relu_relaxation(box, s) for s in ("adaptive", "same-slope", 0, 1, 0.4)]
    else:
        module = nn.MaxPool2d(3, stride=2, padding=1) if layer == "maxpool_overlapping" else nn.MaxPool2d(2)
        cases = [maxpool_relaxation(MaxPool(module, "pool"), box)]
    out_shape = module(centre).shape[1:]
    rows = torch.cat([torch.eye(math.prod(out_shape)), -torch.eye(math.prod(out_shape))]).double()
    rows = rows.view(1, -1, *out_shape).expand(4, -1, *out_shape)
    exact = torch.einsum("bmk,bnk->bnm", rows.flatten(2), module(points.flatten(0, 1)).view(4, len(points[0]), -1))
    for relaxation in cases:
        A, bias = relaxation.backward(rows, shape)
        line = torch.einsum("bmk,bnk->bnm", A.flatten(2), points.flatten(2)) + bias.unsqueeze(1)
        assert (line <= exact + 1e-12).all()


@pytest.mark.parametrize("name", ["mlp", "conv", "normalized"])
@pytest.mark.parametrize("norm", hb.NORMS)
def test_ibp_first_layer_is_exact(name, norm):
    """IBP's box at the first ReLU (affine layers before it) is the exact range of each neuron, on the L2 ball
    too (``||W_i||_2 eps``, through the input normalisation), i.e. what CROWN on the affine prefix gives."""
    model, shape = network(name)
    x = inputs(shape)
    graph = hb.from_module(model)
    first = next(i for i, layer in enumerate(graph.layers) if layer.nonlinear)
    region = hb.linf_ball(x, EPS[norm]) if norm == "linf" else hb.l2_ball(x, EPS[norm])
    box = interval_bounds(graph, region, len(graph))[0][first]
    prefix = hb.Graph(graph.layers[:first])
    n = math.prod(box.centre.shape[1:])
    lo, up = hb.region_bounds(prefix, region, torch.eye(n, dtype=torch.float64), "crown")
    assert torch.allclose(box.lower_bound.flatten(1), lo, atol=1e-12) and torch.allclose(box.upper_bound.flatten(1), up, atol=1e-12)


# ---------------------------------------------------------------- exactness

def affine_net() -> nn.Module:
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.BatchNorm2d(3), nn.AvgPool2d(2, padding=1),
                        nn.Flatten(), nn.Linear(12, 8), nn.BatchNorm1d(8), nn.Linear(8, 5))
    return randomize_batchnorm(net).double().eval()


def closed_form_min(model: nn.Module, region, C: torch.Tensor) -> torch.Tensor:
    """min over the set of ``C f(x)`` for an affine ``f``: the Jacobian ``J`` at the centre, then
    ``J c - |J| r`` (box) or ``J c - ||J r||_2`` (ellipsoid)."""
    c, r = region.centre, region.radius
    J = torch.autograd.functional.jacobian(lambda z: model(z).sum(0), c).movedim(0, 1)  # (B, outputs, *shape)
    J = torch.einsum("bmk,bk...->bm...", C, J)
    value = torch.einsum("bmk,bk->bm", C, model(c))
    if isinstance(region, hb.Box):
        return value - (J.abs() * r.unsqueeze(1)).flatten(2).sum(-1)
    return value - (J * r.unsqueeze(1)).flatten(2).norm(dim=-1)


@pytest.mark.parametrize("norm", hb.NORMS)
def test_exact_on_affine_networks(norm):
    """No ReLU: CROWN is exact (so are IBP, whose elision covers the whole affine net, and CROWN-IBP).
    One Linear layer: IBP with C elided is exact, and tighter than C applied to the logit interval."""
    model = affine_net()
    x = inputs(torch.Size([2, 6, 6]))
    x[0, 0, 0, 0] = 0.01  # the box meets the [0, 1] boundary
    y = model(x).argmax(1)
    C = hb.margin_matrix(y, 5, torch.float64)
    region = hb.linf_ball(x, 0.1) if norm == "linf" else hb.l2_ball(x, 0.5)
    exact = closed_form_min(model, region, C)
    for method in METHODS:
        assert torch.allclose(hb.lower_bounds(hb.from_module(model), region, C, method), exact, atol=1e-10), method
    linear = nn.Linear(12, 5).double()
    z = inputs(torch.Size([12]))
    box = hb.linf_ball(z, 0.1) if norm == "linf" else hb.l2_ball(z, 0.5)
    lb = hb.lower_bounds(hb.from_module(linear), box, C, "ibp")
    assert torch.allclose(lb, closed_form_min(linear, box, C), atol=1e-12)
    lo, up = hb.region_bounds(linear, box, None, "ibp")
    naive = torch.einsum("bmk,bk->bm", C.clamp(min=0), lo) + torch.einsum("bmk,bk->bm", C.clamp(max=0), up)
    assert (lb >= naive - 1e-12).all() and (lb > naive + 1e-6).any()


def milp_min_margin(layers: list[nn.Linear], boxes: list[tuple[np.ndarray, np.ndarray]], lower: np.ndarray,
                    upper: np.ndarray, c: np.ndarray) -> tuple[float, np.ndarray]:
    """Exact min of ``c f(x)`` over the box for a ReLU MLP: big-M MILP with the given pre-activation boxes.
    Variables: x, then per hidden layer (z, a, d): pre-activation, post-activation, binary phase.  HiGHS runs
    with presolve off: with presolve on it was seen returning "optimal" values up to 3.7e-4 above points PGD
    reaches on CNNs of a few hundred binaries, which could hide a bound above the true minimum."""
    sizes = [lower.size] + [lay.out_features for lay in layers[:-1]]
    offsets, n = [0], lower.size
    for s in sizes[1:]:
        offsets.append(n)
        n += 3 * s
    lb, ub = np.full(n, -np.inf), np.full(n, np.inf)
    lb[:lower.size], ub[:lower.size] = lower, upper
    integrality = np.zeros(n)
    rows, lo, hi = [], [], []

    def row(entries):
        r = np.zeros(n)
        for idx, val in entries:
            r[idx] += val
        return r

    prev = list(range(lower.size))
    for k, lay in enumerate(layers[:-1]):
        W, b = lay.weight.detach().numpy(), lay.bias.detach().numpy()
        s, o = W.shape[0], offsets[k + 1]
        z, a, d = range(o, o + s), range(o + s, o + 2 * s), range(o + 2 * s, o + 3 * s)
        l, u = boxes[k]
        lb[list(z)], ub[list(z)] = l, u
        lb[list(a)], ub[list(a)] = 0, np.maximum(u, 0)
        lb[list(d)], ub[list(d)], integrality[list(d)] = 0, 1, 1
        for i in range(s):
            rows.append(row([(prev[j], W[i, j]) for j in range(len(prev))] + [(z[i], -1)])); lo.append(-b[i]); hi.append(-b[i])
            rows.append(row([(z[i], 1), (a[i], -1)])); lo.append(-np.inf); hi.append(0)                       # a >= z
            rows.append(row([(a[i], 1), (z[i], -1), (d[i], -l[i])])); lo.append(-np.inf); hi.append(-l[i])  # a <= z - l (1 - d)
            rows.append(row([(a[i], 1), (d[i], -u[i])])); lo.append(-np.inf); hi.append(0)                  # a <= u d
        prev = list(a)
    W, b = layers[-1].weight.detach().numpy(), layers[-1].bias.detach().numpy()
    objective = np.zeros(n)
    objective[prev] = c @ W
    res = milp(objective, constraints=LinearConstraint(np.array(rows), lo, hi), integrality=integrality,
               bounds=Bounds(lb, ub), options={"mip_rel_gap": 1e-12, "presolve": False})
    assert res.success, res.message
    return float(res.fun + c @ b), res.x[:lower.size]


def test_milp_exact_minimum_lies_above_every_bound():
    torch.manual_seed(5)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    layers = [m for m in net if isinstance(m, nn.Linear)]
    x = inputs(torch.Size([4]), batch=6, seed=4)
    y = net(x).argmax(1)
    C = hb.margin_matrix(y, 3, torch.float64)
    region = hb.linf_ball(x, 0.15)
    graph = hb.from_module(net)
    ibp_boxes = interval_bounds(graph, region, len(graph))[0]
    found = {m: hb.lower_bounds(graph, region, C, m).detach() for m in METHODS}
    sound = {m: hb.margin_bounds(net, x, y, 0.15, method=m, sound=True) for m in METHODS}
    gaps = {m: [] for m in METHODS}
    for i in range(len(x)):
        boxes = [(ibp_boxes[k].lower_bound[i].detach().numpy(), ibp_boxes[k].upper_bound[i].detach().numpy()) for k in (1, 3)]
        lower, upper = region.lower_bound[i].numpy(), region.upper_bound[i].numpy()
        for j in range(2):
            c = C[i, j].numpy()
            exact, argmin = milp_min_margin(layers, boxes, lower, upper, c)
            attained = float(c @ net(torch.from_numpy(argmin).unsqueeze(0))[0].detach().numpy())
            assert attained == pytest.approx(exact, abs=1e-6)  # the encoding is the network at the solver's argmin
            for m in METHODS:
                assert found[m][i, j] <= exact + 1e-7, (m, i, j)
                assert found[m][i, j] <= attained + 1e-7, (m, i, j)  # a value the network takes on the ball
                assert sound[m][i, j] <= min(exact, attained), (m, i, j)  # rigorous: no tolerance
                gaps[m].append(exact - float(found[m][i, j]))
    mean_gap = {m: float(np.mean(g)) for m, g in gaps.items()}
    print("\n[bounds] MILP 4-8-8-3: mean gap to the exact minimum margin "
          + ", ".join(f"{m} {g:.4g}" for m, g in mean_gap.items()))
    assert mean_gap["crown"] < mean_gap["ibp"]


# ---------------------------------------------------------------- against bound_propagation 0.4.7

def reference(dense: nn.Sequential, lower: torch.Tensor, upper: torch.Tensor, method: str, adaptive: bool):
    """bound_propagation's bounds of ``dense`` (Linear/ReLU only) on the box; its crown intersects every
    intermediate CROWN box with the IBP box, and its ReLU lower slope is u/(u-l) unless ``adaptive_relu``."""
    net = bp.BoundModelFactory(adaptive_relu=adaptive).build(dense)
    region = bp.HyperRectangle(lower, upper)
    out = net.ibp(region) if method == "ibp" else getattr(net, method.replace("-", "_"))(region).concretize()
    return out.lower, out.upper


def unrolled(model: nn.Sequential, shape: torch.Size) -> nn.Sequential:
    """Every affine layer of ``model`` as the dense ``nn.Linear`` it is on flattened inputs (test-only):
    ReLU stays, Flatten disappears.  Layer by layer, so IBP is unchanged too (each dense entry is one weight)."""
    layers, z = [], torch.zeros(1, *shape, dtype=torch.float64)
    for layer in model:
        out = layer(z)
        if isinstance(layer, nn.ReLU):
            layers.append(nn.ReLU())
        elif not isinstance(layer, nn.Flatten):
            fn = lambda v, layer=layer, s=z.shape[1:]: layer(v.view(1, *s)).flatten()  # noqa: E731
            dense = nn.Linear(z.numel(), out.numel()).double()
            dense.weight.data = torch.autograd.functional.jacobian(fn, z.flatten())
            dense.bias.data = fn(torch.zeros(z.numel(), dtype=torch.float64)).detach()
            layers.append(dense)
        z = out
    return nn.Sequential(*layers)


def reference_cases():
    torch.manual_seed(7)
    mlp = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 10), nn.ReLU(),
                        nn.Linear(10, 4)).double()
    conv = nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1),
                         nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16, 8), nn.ReLU(),
                         nn.Linear(8, 4))
    conv = randomize_batchnorm(conv).double().eval()
    return {"mlp": (mlp, torch.Size([6]), mlp), "conv": (conv, torch.Size([2, 8, 8]), unrolled(conv, torch.Size([2, 8, 8])))}


@pytest.mark.parametrize("case", ["mlp", "conv"])
def test_equal_to_bound_propagation(case):
    model, shape, dense = reference_cases()[case]
    x = inputs(shape, batch=5)
    lower, upper = (x - 0.06).clamp(0, 1), (x + 0.06).clamp(0, 1)
    spec = torch.tensor([[1.0, -1.0, 0.0, 0.0], [0.0, 2.0, 0.0, -1.0], [0.5, 0.5, -1.0, 0.0]], dtype=torch.float64)
    dense_spec = nn.Sequential(*dense, bp.FixedLinear(spec))
    flat = lower.flatten(1), upper.flatten(1)
    widths = {}
    for method in METHODS:
        for adaptive in ((False,) if method == "ibp" else (False, True)):
            slope = "adaptive" if adaptive else "same-slope"
            options = {} if method == "ibp" else {"lower_slope": slope} | ({"intersect_ibp": True} if method == "crown" else {})
            ours = hb.bounds(model, lower, upper, None, method, **options)
            theirs = reference(dense, *flat, method, adaptive)
            for a, b in zip(ours, theirs):
                assert torch.allclose(a, b, atol=1e-5, rtol=0), (method, slope, (a - b).abs().max())
            ours_c = hb.bounds(model, lower, upper, spec, method, **options)
            per_sample = hb.bounds(model, lower, upper, spec.expand(len(x), -1, -1), method, **options)
            assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(ours_c, per_sample))
            theirs_c = reference(dense_spec, *flat, method, adaptive)
            if method == "ibp":  # ours elides the specification into the last layer: never looser
                assert (ours_c[0] >= theirs_c[0] - 1e-9).all() and (ours_c[1] <= theirs_c[1] + 1e-9).all()
            else:
                for a, b in zip(ours_c, theirs_c):
                    assert torch.allclose(a, b, atol=1e-5, rtol=0), (method, slope, "C", (a - b).abs().max())
            widths[method if method == "ibp" else f"{method}/{slope}"] = (ours[1] - ours[0]).mean().item()
    plain = hb.bounds(model, lower, upper, None, "crown")
    widths["crown/adaptive, no IBP intersection"] = (plain[1] - plain[0]).mean().item()
    print(f"\n[bounds] {case} vs bound_propagation (equal): mean logit-bound width "
          + ", ".join(f"{k} {v:.4g}" for k, v in widths.items()))


# ---------------------------------------------------------------- differentiability

class MarginLowerBound(nn.Module):
    def __init__(self, net: nn.Module, y: torch.Tensor, eps: float, method: str, norm: str, **options):
        super().__init__()
        self.net, self.y, self.eps, self.method, self.norm, self.options = net, y, eps, method, norm, options

    def forward(self, x):
        return hb.margin_bounds(self.net, x, self.y, self.eps, self.norm, self.method, **self.options)


def gradient_cases():
    torch.manual_seed(11)
    mlp = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    cnn = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(2, 2, 3, stride=2, padding=1),
                        nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(2, 3))
    return {"mlp": (mlp, torch.Size([3])), "cnn": (randomize_batchnorm(cnn).double().eval(), torch.Size([1, 4, 4]))}


@pytest.mark.parametrize("case", ["mlp", "cnn"])
@pytest.mark.parametrize("method,options", [("crown-ibp", {}), ("crown-ibp", {"beta": 0.5}), ("crown", {}), ("ibp", {})])
def test_gradients_match_finite_differences(case, method, options):
    """d(margin lower bound) / d(x, parameters), float64 gradcheck, Linf and L2."""
    net, shape = gradient_cases()[case]
    x = (0.2 + 0.6 * inputs(shape, batch=2, seed=12)).requires_grad_(True)
    y = net(x).argmax(1).detach()
    names = [n for n, _ in net.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in net.parameters()]
    for norm, eps in (("linf", 0.05), ("l2", 0.1)):
        wrapper = MarginLowerBound(net, y, eps, method, norm, **options)

        def f(x, *params):
            return torch.func.functional_call(wrapper, {f"net.{n}": p for n, p in zip(names, params)}, (x,))

        value = f(x, *params)
        grads = torch.autograd.grad(value.sum(), [x, *params])
        assert all(torch.isfinite(g).all() for g in grads)
        assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-5)


# ---------------------------------------------------------------- conversion

def test_conversion_rules_and_errors():
    normalized = DuckNormalized().double().eval()
    explicit = nn.Sequential(normalized.features, normalized.classifier)
    x = inputs(torch.Size([3, 6, 6]))
    y = normalized(x).argmax(1)
    via_duck = hb.margin_bounds(normalized, x, y, 0.05, method="crown")
    via_arg = hb.margin_bounds(explicit, x, y, 0.05, method="crown", normalize=(normalized.mean, normalized.std))
    assert torch.allclose(via_duck, via_arg, atol=1e-12)
    assert torch.allclose(hb.from_module(explicit, normalize=([0.4, 0.5, 0.6], [0.2, 0.25, 0.3])).forward(x),
                          normalized(x), atol=1e-6)
    assert [type(layer).__name__ for layer in hb.from_module(normalized).layers][:2] == ["ChannelAffine", "Conv"]

    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.head = nn.Linear(2, 2), nn.Linear(2, 2)

    bad = {
        "'1' (Tanh)": nn.Sequential(nn.Linear(2, 2), nn.Tanh()),
        "'0.1' (BatchNorm1d)": nn.Sequential(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))),  # training mode
        "(Custom)": Custom(),
        "'0' (Conv2d)": nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect")),
        "'1' (Flatten)": nn.Sequential(nn.Linear(2, 2), nn.Flatten(0)),
        "'0' (MaxPool2d)": nn.Sequential(nn.MaxPool2d(2, ceil_mode=True)),
        "'0' (AvgPool2d)": nn.Sequential(nn.AvgPool2d(3, padding=1, count_include_pad=False)),
    }
    for message, model in bad.items():
        with pytest.raises(TypeError, match=message.replace("(", r"\(").replace(")", r"\)")):
            hb.from_module(model)
    with pytest.raises(ValueError, match="method"):
        hb.margin_bounds(explicit, x, y, 0.05, method="deeppoly", normalize=(normalized.mean, normalized.std))
    with pytest.raises(ValueError, match="lower_slope"):
        hb.margin_bounds(normalized, x, y, 0.05, method="crown", lower_slope=2)


def test_margin_matrix():
    C = hb.margin_matrix(torch.tensor([0, 2]), 3)
    expected = torch.tensor([[[1.0, -1.0, 0.0], [1.0, 0.0, -1.0]], [[-1.0, 0.0, 1.0], [0.0, -1.0, 1.0]]])
    assert torch.equal(C, expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_same_bounds_on_cuda():
    model, shape = network("small_cnn")
    x = inputs(shape)
    y = model(x).argmax(1)
    for method in METHODS:
        cpu = hb.margin_bounds(model, x, y, 0.05, "linf", method)
        gpu = hb.margin_bounds(model.cuda(), x.cuda(), y.cuda(), 0.05, "linf", method)
        model.cpu()
        assert gpu.device.type == "cuda" and torch.allclose(cpu, gpu.cpu(), atol=1e-8)


def test_bounds_look_through_the_engines_pass_counter():
    """The engine hands defenses its CountingModel (a ModelWrapper): the bounds are those of the model inside."""
    from harness.counting import CountingModel

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.rand(5, 1, 4, 4)
    y = torch.randint(0, 3, (5,))
    for method in ("ibp", "crown-ibp", "crown"):
        assert torch.equal(hb.margin_bounds(CountingModel(net), x, y, 0.05, method=method),
                           hb.margin_bounds(net, x, y, 0.05, method=method))
