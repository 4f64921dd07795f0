"""Defense-GAN (Samangouei et al., ICLR 2018) and BPDA on it (Athalye et al., ICML 2018): the projection's
reconstruction error against L and R, shapes and range, BPDA = a hand-written straight-through PGD, the generator's
training, caching and checkpoints, and usage errors.  The default digits generator trains on first use (about a
minute on one thread) and is cached; with the cache the module runs in well under a minute."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from harness.core.attack import AttackContext
from harness.core.budget import Budget
from harness.core.capabilities import Approximates, Randomized, TrainsAlone, TrainsForTarget, declares
from harness.plugins import load_builtins

load_builtins()

import defenses.defense_gan as dg  # registers defense_gan after the built-ins
from harness.cli import main as cli_main
from harness.core.errors import UsageError
from harness.core.registry import ATTACKS, DEFENSES
from harness.data import load

pytestmark = pytest.mark.usefixtures("one_thread")

N = 100  # digits test images for the reconstruction tests


@pytest.fixture(scope="module")
def gan():
    """The default defense (quick defaults L=50, R=5, step 0.1; the generator trained on first use and cached)."""
    return DEFENSES.create("defense_gan")


@pytest.fixture(scope="module")
def clf(frozen_zoo):
    return frozen_zoo("digits_cnn")


def test_registered_with_paper_defaults(gan):
    entry = DEFENSES.get("defense_gan")
    assert entry.paper["L"] == "200" and entry.paper["R"] == "10" and entry.paper["step_size"].startswith("0.01")
    assert {"L", "R", "step_size", "dataset", "checkpoint", "data_dir"} <= set(entry.params)
    assert "quiet" not in entry.params  # bars follow harness.core.progress, not a parameter
    assert gan.kind == "preprocessor" and declares(gan, Randomized) and declares(gan, Approximates)
    assert entry.declares(TrainsAlone) and not entry.declares(TrainsForTarget)
    assert (gan.L, gan.R, gan.step_size) == (50, 5, 0.1)
    d = gan.describe()
    assert d["L"] == 50 and d["dataset"] == "digits" and len(d["weights"]) == 12


def test_reconstruction_error_is_small_and_decreases_with_L_and_R(gan, clf, digits_test):
    x, y = digits_test.x[:N], digits_test.y[:N]
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(8, N, gan.G.latent_dim, generator=g)
    err = {}
    for L in (0, 5, 25, 100):  # R = 1, the same start for every L
        err[L, 1] = dg.reconstruct(gan.G, x, L, 1, 0.1, z0=z0[:1])[2] / 64
    for R in (2, 8):  # L = 25, the starts of R = 1 among them
        err[25, R] = dg.reconstruct(gan.G, x, 25, R, 0.1, z0=z0[:R])[2] / 64
    mean = {k: v.mean().item() for k, v in err.items()}
    assert mean[0, 1] > mean[5, 1] > mean[25, 1] > mean[100, 1]
    assert mean[100, 1] < 0.5 * mean[5, 1]
    # best of R starts that include R = 1's: never worse per sample (up to batched-kernel rounding), better on average
    assert (err[25, 8] <= err[25, 2] + 1e-5).all() and (err[25, 2] <= err[25, 1] + 1e-5).all()
    assert mean[25, 1] > mean[25, 2] > mean[25, 8]
    # small at the quick defaults: per-pixel MSE ~0.01 (pixel variance ~0.1), the classifier keeps its accuracy
    torch.manual_seed(0)
    e_def = dg.reconstruction_error(gan.G, x, gan.L, gan.R, gan.step_size)
    assert e_def.mean() < 0.02 and e_def.median() < 0.015
    torch.manual_seed(0)
    acc_p = (gan.classify(clf, x) == y).float().mean()
    acc = (clf(x).argmax(1) == y).float().mean()
    assert acc_p >= acc - 0.06


def test_purify_keeps_shape_range_and_masks_the_gradient(gan):
    small = DEFENSES.create("defense_gan", L=2, R=2)
    x = torch.rand(dg.BATCH + 9, 1, 8, 8) * 1.4 - 0.2  # out of [0, 1], more than one chunk
    torch.manual_seed(1)
    out = small.purify(x)
    assert out.shape == x.shape and out.dtype == x.dtype and 0 <= out.min() and out.max() <= 1
    torch.manual_seed(1)
    assert torch.equal(small.purify(x), out)  # seeded from the global generator
    assert not torch.equal(small.purify(x), out)  # a fresh draw: randomized
    assert small.purify(x[:0]).shape == (0, 1, 8, 8)
    # z* is not differentiated: a plain gradient attack through P sees zero (what BPDA replaces)
    xr = x[:5].clamp(0, 1).requires_grad_(True)
    (grad,) = torch.autograd.grad(small.purify(xr).sum(), xr)
    assert torch.count_nonzero(grad) == 0
    assert torch.equal(small.approx(xr), xr)
    with pytest.raises(UsageError, match="shape"):
        small.purify(torch.rand(2, 1, 28, 28))


def straight_through_pgd(purify, clf, x, y, eps, steps, alpha):
    """Hand-written PGD (Madry et al. 2018) on clf(P(x)) with P's backward replaced by the identity (BPDA,
    Athalye et al. 2018, Sec. 4.1: the gradient of the loss at P(x) applied to x), random start; against this
    randomized P every attacked sample takes every step (one lucky draw is no success) - the same draws in the same
    order as ``attacks.pgd.PGD`` inside ``attacks.bpda``."""
    x = x.detach()
    with torch.no_grad():
        todo = clf(purify(x)).argmax(1) == y
    out = x.clone()
    idx = todo.nonzero().flatten()
    if idx.numel() == 0:
        return out
    x0, y0 = x[idx], y[idx]
    xa = (x0 + (torch.rand_like(x0) * 2 - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        p = purify(xa).detach().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(clf(p), y0, reduction="sum"), p)
        with torch.no_grad():
            step = xa + alpha * g.sign()
            xa = (x0 + (step - x0).clamp(-eps, eps)).clamp(0, 1)
    out[idx] = xa
    return out


def test_bpda_identity_equals_hand_written_straight_through_pgd(clf, digits_test):
    d = DEFENSES.create("defense_gan", L=25, R=2)
    x, y = digits_test.x[:40], digits_test.y[:40]
    eps, steps = 0.3, 5
    attack = ATTACKS.create("bpda", backward="identity", **{"inner.steps": steps})
    torch.manual_seed(7)
    x_bpda = attack.perturb(d.surface(clf, "white-box"), x, y, Budget("linf", eps), AttackContext(d, clf))
    torch.manual_seed(7)
    x_hand = straight_through_pgd(d.purify, clf, x, y, eps, steps, eps / 4)
    assert torch.equal(x_bpda, x_hand)
    assert (x_bpda - x).abs().max() <= eps + 1e-6 and 0 <= x_bpda.min() and x_bpda.max() <= 1
    # plain PGD through P sees the zero gradient of the projection (masked); BPDA's identity backward breaks it
    torch.manual_seed(7)
    x_plain = ATTACKS.create("pgd", steps=steps).perturb(d.surface(clf, "white-box"), x, y, Budget("linf", eps))
    acc = {}
    for name, xa in (("clean", x), ("plain", x_plain), ("bpda", x_bpda)):
        torch.manual_seed(8)
        acc[name] = (d.classify(clf, xa) == y).float().mean().item()
    assert acc["plain"] >= acc["clean"] - 0.1 and acc["bpda"] < acc["plain"] - 0.25, acc


def test_generator_training_is_seeded_cached_and_checkpoints_round_trip(tmp_path, monkeypatch):
    data = load("digits", "train")
    a = dg.train_generator(data, 3, seed=3)
    b = dg.train_generator(data, 3, seed=3)
    c = dg.train_generator(data, 3, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa) and any(not torch.equal(sa[k], sc[k]) for k in sa)
    before = torch.get_num_threads()
    state = torch.random.get_rng_state()
    dg.train_generator(data, 1)
    assert torch.equal(torch.random.get_rng_state(), state) and torch.get_num_threads() == before
    # cache: trained once, then read back
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    _, src1 = dg.load_or_train_generator({"iters": 3, "seed": 3})
    g2, src2 = dg.load_or_train_generator({"iters": 3, "seed": 3})
    assert src1 == src2 and src1.startswith(str(tmp_path / "cache"))
    assert all(torch.equal(v, sa[k]) for k, v in g2.state_dict().items())
    # save_generator (the CLI's `harness train --defense defense_gan --out G.pt`) then checkpoint=
    out = tmp_path / "G.pt"
    cfg = dg.save_generator(out, iters=3, seed=3)
    assert cfg == {"latent_dim": 16, "channels": 1, "image_size": 8, "width": 32, "dataset": "digits", "split": "train"}
    d = DEFENSES.create("defense_gan", checkpoint=str(out), L=1, R=1)
    assert all(torch.equal(v, sa[k]) for k, v in d.G.state_dict().items())
    assert d.describe()["checkpoint"] == str(out) and "iters" not in d.describe()
    with pytest.raises(UsageError, match="epochs or iters"):
        dg.save_generator(tmp_path / "x.pt", epochs=1, iters=2)


def test_bad_settings_and_checkpoints_are_one_line_usage_errors(tmp_path):
    for kw in ({"L": -1}, {"L": 2.5}, {"L": "many"}, {"R": 0}, {"R": 10_000}, {"step_size": 0},
               {"step_size": float("nan")}, {"step_size": -0.1}):
        with pytest.raises(UsageError) as err:
            DEFENSES.create("defense_gan", **kw)
        assert "\n" not in str(err.value)
    with pytest.raises(UsageError, match="unknown training settings"):
        dg.resolve_settings("digits", nope=1)
    mnist_like = tmp_path / "mnist_g.pt"
    g = dg.Generator(8, 1, 28, 4)
    torch.save({"generator": g.state_dict(), "config": {"latent_dim": 8, "channels": 1, "image_size": 28, "width": 4}},
               mnist_like)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    wrong = tmp_path / "wrong.pt"
    torch.save({"fc.0.weight": torch.zeros(3)}, wrong)
    for path, what in ((mnist_like, "28x28"), (junk, "cannot read"), (wrong, "does not fit"),
                       (tmp_path / "missing.pt", "does not exist")):
        with pytest.raises(UsageError, match=what) as err:
            DEFENSES.create("defense_gan", checkpoint=str(path))
        assert "\n" not in str(err.value)
    rc = cli_main(["run", "--defense", "defense_gan", "--set", "defense_gan.L=-3", "--n", "4", "--quiet",
                   "--out", str(tmp_path / "o")])
    assert rc == 2
