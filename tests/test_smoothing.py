"""Randomized smoothing (defenses/smoothing.py), SmoothAdv PGD, EOT and certified tables.

The reference for CERTIFY/PREDICT is a plain transcription of Cohen et al. (2019)'s published pseudocode kept
here, with its own confidence bound (the binomial tail inverted by root finding, not the Beta quantile) and
its own Phi^-1 (statistics.NormalDist); it draws the noise as Cohen et al.'s code does, one image at a time.
"""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import brentq
from scipy.stats import beta, binom, binomtest
from torch import nn

from harness.core.budget import Budget
from harness.core.capabilities import Randomized, Reconstructs, declares
from harness.certify import Certificates, certify_dataset, curve_rows, radii_for, table_rows
from harness.core.registry import ATTACKS, DEFENSES, RECIPES
from harness.data import load
from harness.plugins import load_builtins

load_builtins()

from attacks.eot import EOTModel  # noqa: E402
from defenses.smoothing import Smoothing, lower_confidence_bound  # noqa: E402
from harness.core.defense import SoftSmoothed, soft_log_prob  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ABSTAIN = -1


# ----------------------------------------------------------------------------------------------------------
# Reference: Cohen, Rosenfeld & Kolter (ICML 2019), pseudocode for certification and prediction
# ----------------------------------------------------------------------------------------------------------

def ref_sample_under_noise(f, x, num, sigma, batch):
    """SAMPLEUNDERNOISE(f, x, num, sigma): counts of f(x + eps), eps ~ N(0, sigma^2 I), for one image x (1xCxHxW)."""
    counts = None
    remaining = num
    with torch.no_grad():
        while remaining > 0:
            this = min(batch, remaining)
            remaining -= this
            xs = x.repeat((this, 1, 1, 1))
            noise = torch.randn_like(xs) * sigma
            logits = f(xs + noise)
            pred = logits.argmax(1).numpy()
            c = np.bincount(pred, minlength=logits.shape[1])
            counts = c if counts is None else counts + c
    return counts


def ref_lower_conf_bound(k, n, confidence):
    """LOWERCONFBOUND(k, n, 1 - alpha): the p at which P[Binomial(n, p) >= k] = alpha (Clopper-Pearson)."""
    a = 1 - confidence
    if k == 0:
        return 0.0
    if k == n:
        return a ** (1.0 / n)
    return brentq(lambda p: binom.sf(k - 1, n, p) - a, 1e-15, 1 - 1e-15, xtol=1e-15, rtol=1e-15, maxiter=500)


def ref_certify(f, sigma, x, n0, n, alpha, batch):
    counts0 = ref_sample_under_noise(f, x, n0, sigma, batch)
    c_a = int(np.argmax(counts0))  # top index in counts0
    counts = ref_sample_under_noise(f, x, n, sigma, batch)
    p_a = ref_lower_conf_bound(int(counts[c_a]), n, 1 - alpha)
    if p_a > 0.5:
        return c_a, sigma * NormalDist().inv_cdf(p_a)
    return ABSTAIN, 0.0


def ref_predict(f, sigma, x, n, alpha, batch):
    counts = ref_sample_under_noise(f, x, n, sigma, batch)
    order = np.argsort(-counts, kind="stable")
    c_a, c_b = int(order[0]), int(order[1])
    n_a, n_b = int(counts[c_a]), int(counts[c_b])
    if binomtest(n_a, n_a + n_b, 0.5).pvalue <= alpha:
        return c_a
    return ABSTAIN


# ----------------------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ridge_model():
    """A fixed linear classifier on digits (ridge regression to one-hot labels): deterministic, fast, ~93%."""
    tr = load("digits", "train")
    x = torch.cat([tr.x.flatten(1), torch.ones(len(tr.x), 1)], 1).double()
    w = torch.linalg.solve(x.T @ x + 10.0 * torch.eye(65, dtype=torch.float64), x.T @ F.one_hot(tr.y, 10).double())
    lin = nn.Linear(64, 10)
    lin.weight.data, lin.bias.data = w[:64].T.float().contiguous(), w[64].float().contiguous()
    return nn.Sequential(nn.Flatten(), lin).eval()


@pytest.fixture(scope="module")
def gauss_model(frozen_zoo):
    return frozen_zoo("digits_cnn_gauss")


class Constant(nn.Module):
    def __init__(self, cls=3, classes=10):
        super().__init__()
        self.cls, self.classes = cls, classes

    def forward(self, x):
        out = torch.zeros(x.shape[0], self.classes)
        out[:, self.cls] = 1.0
        return out


class CoinFlip(nn.Module):
    """Class 0 or 1 by the sign of the first pixel: 50/50 under noise around a 0 pixel."""

    def forward(self, x):
        v = x.flatten(1)[:, 0]
        return torch.stack([-v, v] + [torch.full_like(v, -10.0)] * 8, 1)


class ImageId(nn.Module):
    """Predicts the class encoded by the image's mean value (k / 10), robust to small noise."""

    def forward(self, x):
        k = (x.flatten(1).mean(1) * 10).round().long().clamp(0, 9)
        return F.one_hot(k, 10).float()


# ----------------------------------------------------------------------------------------------------------
# CERTIFY / PREDICT against the reference
# ----------------------------------------------------------------------------------------------------------

def test_certify_matches_cohen_pseudocode(ridge_model, digits_test):
    sigma, n0, n, alpha, batch = 0.25, 64, 500, 0.001, 96  # batch 96: partial last batches in both phases
    smooth = Smoothing(sigma=sigma, alpha=alpha, batch=batch)
    x = digits_test.x[:16]
    ours, ref = [], []
    for i in range(len(x)):
        torch.manual_seed(1000 + i)
        p, r = smooth.certify(ridge_model, x[i:i + 1], n0=n0, n=n)
        ours.append((int(p[0]), float(r[0])))
        torch.manual_seed(1000 + i)
        ref.append(ref_certify(ridge_model, sigma, x[i:i + 1], n0, n, alpha, batch))
    assert [o[0] for o in ours] == [r[0] for r in ref]
    np.testing.assert_allclose([o[1] for o in ours], [r[1] for r in ref], rtol=1e-7, atol=1e-9)
    preds = [o[0] for o in ours]
    assert ABSTAIN in preds and any(p != ABSTAIN for p in preds)  # both branches exercised
    assert len({round(o[1], 6) for o in ours}) > 5  # radii vary


def test_predict_matches_cohen_pseudocode(ridge_model, digits_test):
    sigma, n, alpha, batch = 0.5, 60, 0.01, 25
    smooth = Smoothing(sigma=sigma, n=n, alpha=alpha, batch=batch)
    x = digits_test.x[:20]
    ours, ref = [], []
    for i in range(len(x)):
        torch.manual_seed(7 + i)
        ours.append(int(smooth.predict(ridge_model, x[i:i + 1])[0]))
        torch.manual_seed(7 + i)
        ref.append(ref_predict(ridge_model, sigma, x[i:i + 1], n, alpha, batch))
    assert ours == ref
    assert ABSTAIN in ours and any(p != ABSTAIN for p in ours)


def test_batched_sampling_keeps_images_apart():
    """Many images per forward pass (batch not a multiple of num): every draw is counted for its own image."""
    x = torch.stack([torch.full((1, 8, 8), k / 10) for k in (3, 0, 7, 9, 1)])
    smooth = Smoothing(sigma=0.01)
    for num, batch in [(37, 10), (37, 1000), (5, 3), (1, 2)]:
        counts = smooth.sample_noise(ImageId(), x, num, batch)
        expected = torch.zeros(5, 10, dtype=torch.long)
        expected[torch.arange(5), torch.tensor([3, 0, 7, 9, 1])] = num
        assert torch.equal(counts, expected)


def test_batched_certify_is_deterministic_for_a_seed(ridge_model, digits_test):
    smooth = Smoothing(sigma=0.25, n0=50, n_certify=400, batch=128)
    torch.manual_seed(3)
    a = smooth.certify(ridge_model, digits_test.x[:12])
    torch.manual_seed(3)
    b = smooth.certify(ridge_model, digits_test.x[:12])
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# ----------------------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 10, 100, 1000, 100_000])
def test_clopper_pearson_lower_bound(n):
    alpha = 0.001
    ks = sorted({0, 1, n // 3, n // 2, n - 1, n})
    ours = lower_confidence_bound(ks, n, alpha)
    for k, lo in zip(ks, ours):
        expect = 0.0 if k == 0 else beta.ppf(alpha, k, n - k + 1)
        assert lo == pytest.approx(expect, rel=1e-12, abs=0)
        assert lo == pytest.approx(ref_lower_conf_bound(k, n, 1 - alpha), rel=1e-8, abs=1e-12)
    assert ours[-1] == pytest.approx(alpha ** (1 / n), rel=1e-12)


@pytest.mark.parametrize("sigma,n,alpha", [(0.25, 100, 0.001), (0.5, 1000, 0.001), (1.0, 10_000, 0.01)])
def test_constant_classifier_radius(sigma, n, alpha):
    """f always says c: nA = n, pA_lower = alpha^(1/n), radius = sigma * Phi^-1(alpha^(1/n))."""
    smooth = Smoothing(sigma=sigma, n0=10, n_certify=n, alpha=alpha, batch=4096)
    torch.manual_seed(0)
    pred, radius = smooth.certify(Constant(3), torch.rand(3, 1, 8, 8))
    assert pred.tolist() == [3, 3, 3]
    expect = sigma * NormalDist().inv_cdf(alpha ** (1 / n))
    assert radius.tolist() == pytest.approx([expect] * 3, rel=1e-9)


def test_predict_abstains_on_a_coin_flip():
    smooth = Smoothing(sigma=0.25, n=100, alpha=0.001)
    torch.manual_seed(0)
    x = torch.zeros(20, 1, 8, 8)
    assert smooth.predict(CoinFlip(), x).tolist() == [ABSTAIN] * 20
    assert smooth.predict(Constant(4), x).tolist() == [4] * 20


# ----------------------------------------------------------------------------------------------------------
# Soft smoothed classifier, SmoothAdv PGD, EOT
# ----------------------------------------------------------------------------------------------------------

def test_soft_smoothed_is_log_mean_softmax(ridge_model, digits_test):
    x = digits_test.x[:4]
    z = torch.randn(6, *x.shape)
    out = soft_log_prob(ridge_model, x, 0.3, 6, z)
    manual = torch.stack([F.softmax(ridge_model(x + 0.3 * z[i]), 1) for i in range(6)]).mean(0).log()
    torch.testing.assert_close(out, manual, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.exp().sum(1), torch.ones(4))
    smooth = Smoothing(sigma=0.3, m=6)
    assert smooth.surface(ridge_model, "oblivious") is ridge_model
    assert isinstance(smooth.surface(ridge_model, "white-box"), SoftSmoothed)


@pytest.mark.parametrize("norm,eps", [("l2", 0.75), ("linf", 0.1)])
def test_smooth_pgd_lowers_smoothed_accuracy(gauss_model, digits_test, norm, eps):
    x, y = digits_test.x[:40], digits_test.y[:40]
    smooth = DEFENSES.create("smoothing", sigma=0.25, n=100)
    torch.manual_seed(0)
    clean = (smooth.classify(gauss_model, x) == y).float().mean().item()
    attack = ATTACKS.create("pgd_smooth", steps=10, m=8)
    torch.manual_seed(1)
    x_adv = attack.perturb(smooth.surface(gauss_model, "white-box"), x, y, Budget(norm, eps))
    d = (x_adv - x).flatten(1)
    assert float((d.norm(dim=1) if norm == "l2" else d.abs().amax(1)).max()) <= eps * (1 + 1e-5)
    assert 0.0 <= float(x_adv.min()) and float(x_adv.max()) <= 1.0
    torch.manual_seed(0)
    adv = (smooth.classify(gauss_model, x_adv) == y).float().mean().item()
    assert clean >= 0.85
    assert adv <= clean - 0.25, (clean, adv)


def test_smooth_pgd_fixed_noise_and_sigma_override(ridge_model, digits_test):
    x, y = digits_test.x[:8], digits_test.y[:8]
    with pytest.raises(Exception, match="sigma"):
        ATTACKS.create("pgd_smooth").perturb(ridge_model, x, y, Budget("l2", 0.5))
    kw, budget = dict(steps=3, m=4, fixed_noise=True, random_start=False, restarts=2), Budget("l2", 0.5)
    torch.manual_seed(0)
    a = ATTACKS.create("pgd_smooth", sigma=0.25, **kw).perturb(ridge_model, x, y, budget)
    torch.manual_seed(0)
    b = ATTACKS.create("pgd_smooth", **kw).perturb(SoftSmoothed(ridge_model, 0.25, 99), x, y, budget)  # its m
    assert torch.equal(a, b)
    assert float((a - x).flatten(1).norm(dim=1).max()) <= 0.5 * (1 + 1e-5)


class NoisyLinear(nn.Module):
    """A toy random defense: a linear classifier on x + N(0, 0.3^2 I), fresh noise per call."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(10, 64, generator=g), requires_grad=False)

    def forward(self, x):
        return (x + 0.3 * torch.randn_like(x)).flatten(1) @ self.w.T


def test_eot_gradient_is_mean_of_per_draw_gradients(digits_test):
    x, y, k = digits_test.x[:5], digits_test.y[:5], 7
    surface = NoisyLinear()
    torch.manual_seed(11)
    xa = x.clone().requires_grad_(True)
    (g_eot,) = torch.autograd.grad(F.cross_entropy(EOTModel(surface, k)(xa), y, reduction="sum"), xa)
    torch.manual_seed(11)  # the same draws, one by one
    probs, grads_p, grads_ce = [], [], []
    for _ in range(k):
        xk = x.clone().requires_grad_(True)
        logits = surface(xk)
        p_y = F.softmax(logits, 1).gather(1, y[:, None])[:, 0]
        (gp,) = torch.autograd.grad(p_y.sum(), xk, retain_graph=True)
        (gc,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), xk)
        probs.append(p_y.detach())
        grads_p.append(gp)
        grads_ce.append(gc)
    probs, grads_p, grads_ce = torch.stack(probs), torch.stack(grads_p), torch.stack(grads_ce)
    view = (-1, 1, 1, 1)
    # gradient of the mean probability = mean of the per-draw gradients; the loss rescales it per image
    expect = -grads_p.mean(0) / probs.mean(0).view(view)
    torch.testing.assert_close(g_eot, expect, rtol=1e-4, atol=1e-6)
    # equivalently: the per-draw CE gradients, weighted by p_k,y / sum_j p_j,y
    w = probs / probs.sum(0)
    torch.testing.assert_close(g_eot, (w.view(k, -1, 1, 1, 1) * grads_ce).sum(0), rtol=1e-4, atol=1e-6)
    # so a sign step follows the mean per-draw gradient of -p_y
    assert torch.equal(g_eot.sign(), (-grads_p.mean(0)).sign())


def test_eot_attack_wraps_a_registered_attack(ridge_model, digits_test):
    x, y = digits_test.x[:16], digits_test.y[:16]
    eot = ATTACKS.create("eot", inner="pgd_l2", samples=3, **{"inner.steps": 5})
    assert (eot.describe(Budget("l2", 0.5))["inner"]["registry_name"], eot.inner.norms, eot.inner.steps,
            eot.inner.early_stop) == ("pgd_l2", ("l2",), 5, False)
    with pytest.raises(Exception, match="supports norms l2"):  # the inner attack's norm is the one that counts
        eot.supports(Budget("linf", 0.1))
    smooth = Smoothing(sigma=0.25, m=2)
    torch.manual_seed(0)
    x_adv = eot.perturb(smooth.surface(ridge_model, "white-box"), x, y, Budget("l2", 0.5))  # the budget reaches inner
    assert float((x_adv - x).flatten(1).norm(dim=1).max()) <= 0.5 * (1 + 1e-5)
    assert float((x_adv - x).flatten(1).norm(dim=1).max()) > 0.25
    fgsm = ATTACKS.create("eot", inner="fgsm", samples=2)  # no steps/restarts: not passed
    torch.manual_seed(0)
    x_fgsm = fgsm.perturb(smooth.surface(ridge_model, "white-box"), x, y, Budget("linf", 0.1))
    assert torch.allclose((x_fgsm - x).abs().amax(), torch.tensor(0.1))
    with pytest.raises(Exception, match="eot"):
        ATTACKS.create("eot", inner="eot")


def test_gaussian_recipe_does_not_clamp():
    make = RECIPES.create("gaussian", sigma=0.5)
    torch.manual_seed(0)
    x = torch.full((64, 1, 8, 8), 0.5)
    xt = make(None, x, None)
    assert float(xt.min()) < 0 and float(xt.max()) > 1
    assert float((xt - x).std()) == pytest.approx(0.5, rel=0.05)


class Spy(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.shapes = model, []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        return self.model(x)


def test_preempt_smooth_robustifies_against_the_soft_smoothed_classifier(ridge_model, digits_test):
    x = digits_test.x[:6]
    d = DEFENSES.create("preempt_smooth", norm="l2", eps=0.5, maxiter=3, steps=2, m=5, n_label=40,
                        **{"smoothing.sigma": 0.25, "smoothing.n": 60})
    assert (d.kind, declares(d, Randomized), declares(d, Reconstructs), d.delta) == ("preemptive", True, True, 0.5)
    spy = Spy(ridge_model)
    torch.manual_seed(0)
    x_r = d.prepare(spy, x, digits_test.y[:6])
    assert float((x_r - x).flatten(1).norm(dim=1).max()) <= 0.5 * (1 + 1e-5)
    assert 0 <= float(x_r.min()) and float(x_r.max()) <= 1
    assert spy.shapes[0] == (6 * 40, 1, 8, 8)  # the majority-vote label c~(x_o)
    assert set(spy.shapes[1:]) == {(5 * 6, 1, 8, 8)}  # every other pass: the soft smoothed classifier, M = 5
    assert len(spy.shapes) > 1 and not torch.equal(x_r, x)
    torch.manual_seed(1)
    ours = d.classify(ridge_model, x_r)
    torch.manual_seed(1)
    assert torch.equal(ours, Smoothing(sigma=0.25, n=60).predict(ridge_model, x_r))
    surface = d.surface(ridge_model, "grey-box")
    assert isinstance(surface, SoftSmoothed) and (surface.sigma, surface.m) == (0.25, 8)


def test_majority_vote_without_abstention(digits_test):
    """abstain=False: the plain majority vote of n draws (preemptive paper, appendix C.2), never -1."""
    x = torch.zeros(40, 1, 8, 8)
    strict, vote = Smoothing(sigma=0.5, n=50), Smoothing(sigma=0.5, n=50, abstain=False)
    torch.manual_seed(0)
    assert (strict.classify(CoinFlip(), x) == ABSTAIN).float().mean() > 0.8  # a coin flip: PREDICT abstains
    torch.manual_seed(0)
    counts = vote.sample_noise(CoinFlip(), x, 50)
    torch.manual_seed(0)
    ours = vote.classify(CoinFlip(), x)
    assert torch.equal(ours, counts.argmax(1)) and set(ours.tolist()) <= {0, 1}
    d = DEFENSES.create("preempt_smooth", smoothing=Smoothing(sigma=0.5, n=50, abstain=False))  # a part given built
    torch.manual_seed(0)
    assert torch.equal(d.classify(CoinFlip(), x), ours)
    assert vote.classify(CoinFlip(), x[:0]).shape == (0,)


# ----------------------------------------------------------------------------------------------------------
# Certified tables
# ----------------------------------------------------------------------------------------------------------

def test_certified_table_definitions():
    cert = Certificates(label=torch.tensor([0, 1, 2, 3, 4]), predict=torch.tensor([0, 1, -1, 9, 4]),
                        radius=torch.tensor([0.3, 0.8, 0.0, 0.9, 0.0], dtype=torch.float64))
    meta = {"dataset": "d", "model": "m", "defense": "smoothing", "sigma": 0.25, "n0": 100, "n": 1000, "alpha": 0.001, "seed": 0}
    rows = table_rows(cert, radii_for(0.1, "linf", 64), meta)
    acc = {r["radius_label"]: r["certified_acc"] for r in rows}
    # correct: idx 0 (r .3), 1 (r .8), 4 (r 0, certified at 0 only); idx 2 abstains, idx 3 is wrong
    assert acc == {"0": "60.00", "0.25": "40.00", "0.5": "20.00", "0.75": "20.00", "1": "0.00",
                   "eps linf 0.1 (L2 0.8)": "20.00"}
    assert rows[0]["abstain_rate"] == "20.00"
    assert rows[0]["mean_radius"] == f"{(0.3 + 0.8) / 5:.4f}"
    curve = curve_rows(cert, step=0.1)
    assert [c["radius"] for c in curve] == [f"{k / 10:.4f}" for k in range(11)]
    assert [c["certified_acc"] for c in curve] == ["60.00", "40.00", "40.00", "40.00", "20.00", "20.00", "20.00", "20.00",
                                                   "20.00", "0.00", "0.00"]


def test_certify_command_writes_tables(tmp_path, ridge_model, digits_test, monkeypatch):
    from harness.cli import main

    monkeypatch.setattr("harness.assembly.load_model", lambda *a, **k: (ridge_model, "ridge"))
    out = tmp_path / "cert"
    argv = ["certify", "--model", "ridge", "--n", "12", "--skip", "3", "--N0", "50", "--N", "300", "--batch", "200",
            "--batch-size", "5", "--eps", "0.5", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    files = {p.name for p in out.iterdir()}
    assert {"certified.csv", "certified_curve.csv", "certified_samples.csv", "certified.md", "certify.json"} <= files
    with open(out / "certified.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    accs = [float(r["certified_acc"]) for r in rows[:5]]
    assert accs == sorted(accs, reverse=True)
    with open(out / "certified_samples.csv", newline="") as fh:
        samples = list(csv.DictReader(fh))
    assert [int(s["idx"]) for s in samples] == list(range(0, 36, 3))
    radius = np.array([float(s["radius"]) * int(s["correct"]) for s in samples])
    assert float(rows[0]["mean_radius"]) == pytest.approx(radius.mean(), abs=1e-3)
    # the same certificates as certify_dataset with the same seed
    torch.manual_seed(0)
    cert = certify_dataset(Smoothing(sigma=0.25, n0=50, n_certify=300, batch=200), ridge_model,
                           digits_test.x[0:36:3], digits_test.y[0:36:3], batch_size=5, seed=0)
    assert [int(s["predict"]) for s in samples] == cert.predict.tolist()
    first = (out / "certified.csv").read_bytes()
    assert main(argv) == 0
    assert (out / "certified.csv").read_bytes() == first  # reproducible
    assert main(argv + ["--N", "0"]) == 2


def test_certify_preempt_smooth_certifies_the_robustified_images(tmp_path, ridge_model, digits_test, monkeypatch):
    """``certify --defense preempt_smooth``: CERTIFY of x_r = Algorithm 1 on the soft smoothed classifier (Table 7)."""
    from harness.certify import robustify_dataset
    from harness.cli import main

    monkeypatch.setattr("harness.assembly.load_model", lambda *a, **k: (ridge_model, "ridge"))
    out = tmp_path / "cert"
    argv = ["certify", "--model", "ridge", "--defense", "preempt_smooth", "--n", "6", "--N0", "50", "--N", "300",
            "--batch-size", "3", "--eps", "0.5", "--set", "maxiter=2", "--set", "steps=2", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    with open(out / "certified_samples.csv", newline="") as fh:
        samples = list(csv.DictReader(fh))
    d = DEFENSES.create("preempt_smooth", maxiter=2, steps=2, **{"smoothing.n0": 50, "smoothing.n_certify": 300})
    x, y = digits_test.x[:6], digits_test.y[:6]
    x_r = robustify_dataset(d, ridge_model, x, y, batch_size=3, seed=0)
    assert not torch.equal(x_r, x) and float((x_r - x).flatten(1).norm(dim=1).max()) <= 0.5 * (1 + 1e-5)
    cert = certify_dataset(d, ridge_model, x_r, y, batch_size=3, seed=0)
    assert [int(s["predict"]) for s in samples] == cert.predict.tolist()
    assert [s["radius"] for s in samples] == [f"{float(r):.4f}" for r in cert.radius]
    with open(out / "certified.csv", newline="") as fh:
        assert next(csv.DictReader(fh))["defense"] == "preempt_smooth"
    assert main(argv + ["--set", "preempt_smooth.smoothing.sigma=0.5"]) == 2  # certify's own option, not a --set
    assert main(argv + ["--set", "sigma=0.5"]) == 2  # preempt_smooth's sigma is its part's
    assert main(argv + ["--set", "nonsense=1"]) == 2


# ----------------------------------------------------------------------------------------------------------
# The harness command line
# ----------------------------------------------------------------------------------------------------------

def test_cli_smoothing_with_pgd_smooth(tmp_path, gauss_model):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "harness", "run", "--defense", "smoothing", "--attack", "pgd_smooth",
           "--model", "digits_cnn_gauss", "--n", "16", "--set", "n=50", "--set", "steps=5", "--passes", "5",
           "--out", str(out), "--quiet"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    cell = next(r for r in rows if r["attack"] == "pgd_smooth")
    assert cell["threat"] == "white-box" and cell["n"] == "16"
    assert cell["robust_acc_majority"] != ""
    assert float(cell["robust_acc"]) <= float(cell["robust_acc_majority"]) <= float(cell["clean_acc"])
