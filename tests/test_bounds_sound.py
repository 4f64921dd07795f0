"""Certificates that hold in floating point (``harness.bounds.sound``): a float32 IBP bound that passes the exact
minimum of the margin over the ball (computed in rational arithmetic) certifies a sample that is not robust; the
sound bound does not, for every method, and stays below the exact minimum; the certifiers use it by default."""
from __future__ import annotations

import copy
from fractions import Fraction

import pytest
import torch
from torch import nn

from harness import bounds as hb

EPS = 0.0625  # a power of two: the float32 ball is the real one, so only the sums round


def exact_minimum(net: nn.Linear, x: torch.Tensor, eps: float) -> tuple[Fraction, torch.Tensor]:
    """The exact minimum of the margin logit_0 - logit_1 of the affine ``net`` over the Linf ball (inside [0, 1]
    here), in rational arithmetic on the float32 weights, and the corner x* that attains it."""
    w = [Fraction(a) - Fraction(b) for a, b in zip(net.weight[0].tolist(), net.weight[1].tolist())]
    xs = [Fraction(v) for v in x[0].tolist()]
    corner = [xi - Fraction(eps) if wi > 0 else xi + Fraction(eps) for wi, xi in zip(w, xs)]
    value = sum(wi * ci for wi, ci in zip(w, corner)) + Fraction(net.bias[0].item()) - Fraction(net.bias[1].item())
    return value, torch.tensor([[float(c) for c in corner]], dtype=torch.float64)


def overshooting_case() -> tuple[nn.Linear, torch.Tensor, Fraction, torch.Tensor]:
    """A 300-input affine 2-class network and an image whose float32 IBP margin bound is positive while the exact
    minimum over the ball is negative: float32 rounding of the 300-term sums, searched over seeds (about a
    third of them round the bound up; the bias then puts 0 between the two)."""
    y = torch.zeros(1, dtype=torch.long)
    for seed in range(300):
        g = torch.Generator().manual_seed(seed)
        net = nn.Linear(300, 2)
        x = 0.25 + 0.5 * torch.rand(1, 300, generator=g)
        with torch.no_grad():
            net.weight.copy_(torch.randn(2, 300, generator=g))
            net.bias.zero_()
        lb32 = Fraction(hb.margin_bounds(net, x, y, EPS, method="ibp")[0, 0].item())
        exact, _ = exact_minimum(net, x, EPS)
        if lb32 <= exact:
            continue
        with torch.no_grad():
            net.bias[0] = -float((lb32 + exact) / 2)
        exact, corner = exact_minimum(net, x, EPS)
        if hb.certified(net, x, y, EPS, method="ibp").item() and exact < 0:
            return net, x, exact, corner
    pytest.fail("no seed gave a float32 bound above the exact minimum")


def test_float32_bound_passes_the_exact_minimum_and_the_sound_bound_does_not():
    net, x, exact, corner = overshooting_case()
    y = torch.zeros(1, dtype=torch.long)
    assert ((corner - x.double()).abs().max() <= EPS) and (0 <= corner).all() and (corner <= 1).all()
    with torch.no_grad():
        margin = net.double()(corner)[0] @ torch.tensor([1.0, -1.0], dtype=torch.float64)
    assert float(margin) == pytest.approx(float(exact), abs=1e-9) and float(margin) < 0  # the ball is not robust
    net.float()
    float32_bound = hb.margin_bounds(net, x, y, EPS, method="ibp")[0, 0].item()
    assert hb.certified(net, x, y, EPS, method="ibp").item(), "float32 'certifies' it"
    assert Fraction(float32_bound) > exact
    for method in hb.METHODS:
        sound = hb.margin_bounds(net, x, y, EPS, method=method, sound=True)[0, 0].item()
        assert Fraction(sound) <= exact, method
        assert not hb.certified(net, x, y, EPS, method=method, sound=True).item(), method
        assert exact - Fraction(sound) < Fraction(1, 10**9), method  # and not by much


def test_sound_bounds_are_the_float64_bounds_less_a_rounding_margin():
    """IBP's sound bound lies below its float64 bound (the enclosures only widen); every method's within 1e-9 of
    it (CROWN's relaxations follow the widened boxes, so they may land on either side by as much)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 16),
                        nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10)).eval()
    with torch.no_grad():
        net[5].running_mean.uniform_(-0.5, 0.5)
        net[5].running_var.uniform_(0.5, 2.0)
    x = torch.rand(5, 1, 8, 8)
    y = net(x).argmax(1)
    for norm, eps in (("linf", 0.02), ("l2", 0.1)):
        for method in hb.METHODS:
            with torch.no_grad():
                b64 = hb.margin_bounds(copy.deepcopy(net).double(), x.double(), y, eps, norm, method)
                sound = hb.margin_bounds(net, x, y, eps, norm, method, sound=True)
            assert sound.dtype == torch.float64
            gap = b64 - sound
            assert (gap.abs() < 1e-9 * (1 + b64.abs())).all(), (norm, method, gap.abs().max())
            if method == "ibp":
                assert (gap > 0).all(), norm
    assert next(net.parameters()).dtype == torch.float32  # the model itself is left as it was


def test_sound_bounds_lie_below_sampled_margins():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10))
    x = torch.rand(3, 1, 8, 8)
    y = net(x).argmax(1)
    C = hb.margin_matrix(y, 10)
    points = (x.unsqueeze(1) + 0.05 * (2 * torch.rand(3, 500, 1, 8, 8) - 1)).clamp(0, 1)
    with torch.no_grad():
        margins = torch.einsum("bmk,bnk->bnm", C, net(points.flatten(0, 1)).view(3, 500, 10)).double()
        for method in hb.METHODS:
            sound = hb.margin_bounds(net, x, y, 0.05, method=method, sound=True)
            assert (sound.unsqueeze(1) <= margins).all(), method


def test_certifiers_are_sound_by_default():
    from attacks.certifiers import CertifyIBP

    net, x, _, _ = overshooting_case()
    y = torch.zeros(1, dtype=torch.long)
    from harness.core.budget import Budget

    budget = Budget("linf", EPS)
    assert CertifyIBP().run(net, x, y, budget).extra["certified"].item() == 0.0
    assert CertifyIBP(sound=False).run(net, x, y, budget).extra["certified"].item() == 1.0
