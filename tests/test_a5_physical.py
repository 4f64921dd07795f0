"""A5/P and A5/PC (Frosio & Kautz, CVPR 2023, eqs. 10-11; ``defenses.a5.physical``) and the ``fonts`` alphabet
with its acquisition model (``harness.data.fonts``).  Tiny and fast: an untrained width-4 ``a5_cnn_small`` and a
small MLP on 16x16 characters (the dataset default is 28x28), one thread."""
from __future__ import annotations

import pytest
import torch

from harness.core.registry import DATASETS, MODELS
from harness.data import load
from harness.data.fonts import ALPHABET, Acquisition, acquisitions, alphabet, fonts
from harness.plugins import load_builtins

load_builtins()
from defenses import a5
from defenses.a5.physical import physical_loss, robust_prototypes, train_physical

pytestmark = pytest.mark.usefixtures("one_thread")

EPS = 0.1
TINY = {"num_classes": 62, "image_size": 16, "width": 4, "fc": 32}


def test_alphabet_62_distinct_deterministic():
    w = alphabet(16)
    assert alphabet().shape == (62, 1, 28, 28) and w.shape == (62, 1, 16, 16) and len(ALPHABET) == 62 and len(set(ALPHABET)) == 62
    assert 0 <= float(w.min()) and float(w.max()) <= 1 and float(w.amax()) > 0.9
    flat = w.flatten(1)
    d = (flat[:, None] - flat[None]).abs().amax(-1) + 9 * torch.eye(62)
    assert float(d.min()) > 0.05  # all distinct (the closest pair is I / l)
    assert torch.equal(w, alphabet(16))


def test_fonts_dataset_registered_and_deterministic():
    assert "fonts" in DATASETS
    tr, te = load("fonts", "train"), load("fonts", "test")
    assert (len(tr), len(te)) == (62 * 40, 62 * 20) and te.num_classes == 62
    assert te.default_eps["linf"] == 0.1
    assert torch.equal(te.x, load("fonts", "test").x)
    assert not torch.equal(tr.x[:len(te)], te.x)  # different seeds per split
    assert torch.equal(load("fonts", "prototypes").x, alphabet())


def test_acquisition_seeded_and_differentiable():
    A = Acquisition()
    w = alphabet(16)[:8].double().requires_grad_(True)
    x1 = A(w, torch.Generator().manual_seed(3))
    x2 = A(w, torch.Generator().manual_seed(3))
    x3 = A(w, torch.Generator().manual_seed(4))
    assert torch.equal(x1, x2) and not torch.equal(x1, x3)
    assert 0 <= float(x1.detach().min()) and float(x1.detach().max()) <= 1
    g, = torch.autograd.grad((x1 * torch.randn_like(x1)).sum(), w)
    assert torch.isfinite(g).all() and float(g.abs().sum()) > 0
    # finite differences along a random direction, fixed draws (A is piecewise smooth: clamp and bilinear kinks)
    p = A.draw(8, 16, torch.Generator().manual_seed(5))
    p["noise"] = p["noise"] * 0  # keep away from the clamp
    v, h = torch.randn_like(w), 1e-6
    f = lambda ww: A.apply(ww, p).sum()
    fd = (f(w + h * v) - f(w - h * v)) / (2 * h)
    an = (torch.autograd.grad(f(w), w)[0] * v).sum()
    fd, an = float(fd.detach()), float(an)
    assert abs(fd - an) <= 1e-3 * max(1.0, abs(an))


def test_defensive_budget_and_range():
    w = alphabet(16)
    z = 50 * torch.randn_like(w)
    for delta in (0.05, 0.3):
        wr = robust_prototypes(w, z, delta)
        assert float((wr - w).abs().amax()) <= delta + 1e-6
        assert 0 <= float(wr.min()) and float(wr.max()) <= 1


def tiny_classifier() -> torch.nn.Module:
    torch.manual_seed(0)
    return MODELS.create("a5_cnn_small", **TINY).eval()


def test_a5p_lowers_worst_case_loss_on_fixed_acquisitions():
    C = tiny_classifier()
    for p in C.parameters():
        p.requires_grad_(False)
    w = alphabet(16)
    y = torch.arange(62)
    fixed = lambda z: physical_loss(C, w, z, y, EPS, 0.3, Acquisition(), torch.Generator().manual_seed(7), 2)[0]
    before = float(fixed(torch.zeros_like(w)))
    z, C2 = train_physical(C, w, EPS, 0.3, steps=6, n=2, lr_z=0.05, seed=0)
    assert C2 is C and all(not p.requires_grad for p in C.parameters())  # C frozen, flags restored
    assert float(fixed(z)) < before
    w0 = [p.clone() for p in C.parameters()]
    train_physical(C, w, EPS, 0.3, steps=2, n=1, z=z, train_classifier=True, seed=0)
    assert any(not torch.equal(a, b) for a, b in zip(w0, C.parameters()))  # A5/PC trains C too


def test_certified_acquisitions_are_sound_on_sampled_points():
    """A point of the eps_A box around a certified acquisition (vertices and uniform draws) keeps the label."""
    torch.manual_seed(0)
    C = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 64), torch.nn.ReLU(), torch.nn.Linear(64, 62))
    tr = fonts("train", size=16)
    opt = torch.optim.Adam(C.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(C(tr.x), tr.y).backward()
        opt.step()
    C.eval()
    x, y = acquisitions(alphabet(16), 2, 11)
    eps = 0.01
    cert = a5.certify(C, x, y, eps, ("ibp", "crown-ibp"))
    ok = cert["ibp"] | cert["crown-ibp"]
    assert int(ok.sum()) > 0, "nothing certified: the soundness check would be vacuous"
    xs, ys = x[ok], y[ok]
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(20):
            corner = torch.randint(0, 2, xs.shape, generator=gen).float() * 2 - 1
            for d in (corner, 2 * torch.rand(xs.shape, generator=gen) - 1):
                xp = (xs + eps * d).clamp(0, 1)
                assert (C(xp).argmax(1) == ys).all()
