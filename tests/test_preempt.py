"""Preemptive robustification (Moon et al. AAAI 2022): Algorithm 1 (defense ``preempt``), Algorithms 3-4 (attacks
``adaptive_linf`` / ``adaptive_l2``), Algorithm 2 (recipe ``preempt-robust``) and the white-box validity rule."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from attacks.adaptive import AdaptiveReconstruction
from defenses.preempt import PreemptRobustify, Settings, update_gradient
from harness.core.attack import Attack, AttackContext, AttackResult
from harness.core.budget import Budget
from harness.core.geometry import flat_norm, random_in_ball
from harness.core.registry import ATTACKS, DEFENSES, RECIPES
from harness.entrants import Entrant
from harness.engine import evaluate
from harness.plugins import load_builtins
from harness.threat import run_cell

load_builtins()
ROOT = Path(__file__).resolve().parents[1]
BUDGET = {"linf": ("digits_cnn_adv", 0.1), "l2": ("digits_cnn_adv_l2", 0.5)}


pytestmark = pytest.mark.usefixtures("one_thread")


def within(x, center, norm, r):
    return bool((flat_norm(x - center, norm) <= r * (1 + 1e-4) + 1e-6).all())


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("init", ["random", "clean"])
def test_robustified_images_stay_in_delta_ball_and_unit_box(models, digits_test, norm, init):
    _, eps = BUDGET[norm]
    x = digits_test.x[:32]
    torch.manual_seed(0)
    d = PreemptRobustify(norm=norm, eps=eps, maxiter=8, steps=5, init=init)
    x_r = d.robustify(models[norm], x)
    assert x_r.shape == x.shape and within(x_r, x, norm, eps)
    assert x_r.min() >= 0 and x_r.max() <= 1
    assert (x_r - x).abs().max() > 0  # it moved


def test_grey_box_pgd_robust_accuracy_rises_by_a_wide_margin(models, digits_test):
    """Table 1's direction at small scale: on the adversarially trained model, grey-box PGD-20 robust accuracy
    with preempt exceeds the bare model's by >= 15 points (76 -> 93 here, MAXITER 50; clean accuracy ~97 caps it)."""
    model, data = models["linf"], digits_test.take(128)
    defs = [("none", DEFENSES.create("none")), ("preempt", DEFENSES.create("preempt", norm="linf", eps=0.1, maxiter=50))]
    defs = [(n, Entrant.fixed(d, [Budget("linf", 0.1)])) for n, d in defs]
    res = evaluate(model, data, defs, [("pgd", ATTACKS.create("pgd_linf"))], batch_size=500, seed=0,
                   device=torch.device("cpu"))
    acc = {r.defense: 100 * r.worst_case().float().mean().item() for r in res}
    cell = {r.defense: r.cells[0].threat for r in res}
    assert cell == {"none": "white-box", "preempt": "grey-box"}
    assert acc["preempt"] - acc["none"] >= 15, acc


class _Box:
    """Counts the tensors autograd keeps for backward, live at once (peak), through saved_tensors_hooks."""

    live = peak = 0

    def __init__(self, t):
        self.t, self.bytes = t, t.numel() * t.element_size()
        _Box.live += self.bytes
        _Box.peak = max(_Box.peak, _Box.live)

    def __del__(self):
        _Box.live -= self.bytes


def _peak_saved_bytes(model, x, y, s: Settings) -> int:
    _Box.live = _Box.peak = 0
    with torch.autograd.graph.saved_tensors_hooks(_Box, lambda b: b.t):
        update_gradient(model, x, y, s)
    return _Box.peak


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_first_order_update_keeps_no_graph_over_the_inner_steps(models, digits_test, norm):
    """Section 3.4: peak memory of saved activations is the same for T = 5 and T = 40; exact=True grows with T."""
    model, (_, eps) = models[norm], BUDGET[norm]
    x = digits_test.x[:16]
    y = model(x).argmax(1)
    first = [_peak_saved_bytes(model, x, y, Settings(norm, eps, eps, steps=t)) for t in (5, 40)]
    exact = [_peak_saved_bytes(model, x, y, Settings(norm, eps, eps, steps=t, exact=True)) for t in (5, 40)]
    assert first[0] == first[1] > 0
    assert exact[1] > 4 * exact[0] > 4 * first[0]


def _official_style_gradient(model, x_r, y, norm, eps, steps, seed):
    """Independent reference: the official code's meta-gradient (docs/REFERENCE-IMPLEMENTATIONS.md section 1).

    x_adv is built with autograd on, through the random start, the projections onto B_eps(x_r) (clamp of the
    difference for Linf, torch.renorm for L2) and the [0,1] clamps, while each inner loss gradient is taken
    without create_graph (a constant step); then d CE(x_adv^T) / d x_r by autograd.
    """
    torch.manual_seed(seed)
    xr = x_r.clone().requires_grad_(True)
    x = (xr + random_in_ball(xr, norm, eps)).clamp(0, 1)
    for _ in range(steps):
        xd = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xd), y, reduction="sum"), xd)
        if norm == "linf":
            x = torch.clamp(xr + torch.clamp(x + eps / 4 * g.sign() - xr, -eps, eps), 0, 1)
        else:
            step = x + eps / 4 * g / (g.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-12)
            x = torch.clamp(xr + (step - xr).renorm(p=2, dim=0, maxnorm=eps), 0, 1)
    (gr,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), xr)
    return gr, x.detach()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_first_order_gradient_matches_autograd_through_the_official_composition(models, digits_test, norm):
    model, (_, eps) = models[norm], BUDGET[norm]
    x = digits_test.x[:24]
    y = model(x).argmax(1)
    ref, _ = _official_style_gradient(model, x, y, norm, eps, 10, seed=3)
    torch.manual_seed(3)
    ours, _ = update_gradient(model, x, y, Settings(norm, eps, eps, steps=10))
    assert torch.allclose(ours, ref, atol=1e-5, rtol=1e-4)
    # The clamps matter on digits: the plain straight-through gradient dCE/dx_adv^T differs.
    torch.manual_seed(3)
    _, x_adv = _official_style_gradient(model, x, y, norm, eps, 10, seed=3)
    xa = x_adv.requires_grad_(True)
    (straight,) = torch.autograd.grad(F.cross_entropy(model(xa), y, reduction="sum"), xa)
    assert not torch.allclose(straight, ref, atol=1e-3)
    torch.manual_seed(3)
    exact, _ = update_gradient(model, x, y, Settings(norm, eps, eps, steps=10, exact=True))
    if norm == "linf":  # sign() has zero derivative: the first-order gradient IS the exact one (section 3.4)
        assert torch.allclose(exact, ours, atol=1e-5, rtol=1e-4)
    else:  # L2 keeps the Hessian terms of Lemma 2
        assert not torch.allclose(exact, ours, atol=1e-4)


class _FixedAttack(Attack):
    """Returns chosen images (and optionally candidates); stands in for an adaptive attack."""

    adaptive = True

    def __init__(self, images, candidates=None):
        self.images, self.candidates = images, candidates

    def perturb(self, model, x, y, budget, context=None):
        return self.images

    def run(self, model, x, y, budget, context=None):
        return AttackResult(self.images, self.candidates or [])


def _pixel_model():
    """Class 1 iff pixel (0, 0) > 0.5, else class 0: verdicts can be set by hand."""

    def f(x):
        p = x[:, 0, 0, 0]
        return torch.stack([0.5 - p, p - 0.5], 1)

    return f


def test_white_box_invalid_examples_count_as_defended_and_valid_ones_as_successes():
    model = _pixel_model()
    x_o = torch.full((3, 1, 2, 2), 0.45)
    x_r = x_o.clone()
    y = torch.zeros(3, dtype=torch.long)
    adv = x_o.clone()
    adv[0, 0, 0, 0] = 0.55  # misclassified, ||.||_inf = 0.10 <= eps: a valid success
    adv[1, 0, 0, 0] = 0.70  # misclassified but 0.25 away from x_o: invalid, defended
    adv[2, 0, 0, 0] = 0.40  # still correct
    defense = PreemptRobustify(norm="linf", eps=0.1)
    v = run_cell(defense, model, _FixedAttack(adv), "white-box", Budget("linf", 0.1), x_o, x_r, y,
                 torch.ones(3, dtype=torch.bool))
    assert v.robust.tolist() == [False, True, True]
    assert v.valid.tolist() == [True, False, True]
    # Grey-box: the ball is centred at x_r, which here is 0.1 below x_o for sample 1.
    x_r2 = x_o.clone()
    x_r2[1, 0, 0, 0] = 0.62
    v = run_cell(defense, model, _FixedAttack(adv), "grey-box", Budget("linf", 0.1), x_o, x_r2, y,
                 torch.ones(3, dtype=torch.bool))
    assert v.robust.tolist() == [False, False, True]


def test_candidates_take_the_per_sample_worst_case():
    model = _pixel_model()
    x_o = torch.full((4, 1, 2, 2), 0.45)
    y = torch.zeros(4, dtype=torch.long)

    def imgs(*p):
        out = x_o.clone()
        out[:, 0, 0, 0] = torch.tensor(p)
        return out

    # per sample: 0: invalid success then a valid one -> broken; 1: only invalid successes -> defended, invalid;
    # 2: no success -> robust, valid; 3: valid success only in the returned image -> broken.
    returned = imgs(0.40, 0.80, 0.40, 0.52)
    cands = [imgs(0.90, 0.70, 0.44, 0.45), imgs(0.54, 0.60, 0.49, 0.45)]
    v = run_cell(PreemptRobustify(), model, _FixedAttack(returned, cands), "white-box", Budget("linf", 0.1), x_o, x_o,
                 y, torch.ones(4, dtype=torch.bool))
    assert v.robust.tolist() == [False, True, True, False]
    assert v.valid.tolist() == [True, False, True, True]
    assert torch.allclose(v.dist, torch.tensor([0.09, 0.35, 0.05, 0.07]), atol=1e-6)  # reported images


def test_adaptive_attack_sweep_worst_case_and_reconstruction_distances(models, digits_test):
    model, eps = models["l2"], 0.5
    x_o, y = digits_test.x[:24], digits_test.y[:24]
    defense = PreemptRobustify(norm="l2", eps=eps, maxiter=6, steps=5)
    torch.manual_seed(0)
    x_r = defense.robustify(model, x_o)
    clean = model(x_r).argmax(1) == y
    attack = AdaptiveReconstruction(use_autoattack=False)
    torch.manual_seed(1)
    v = run_cell(defense, model, attack, "white-box", Budget("l2", eps), x_o, x_r, y, clean)
    idx = clean.nonzero().flatten()
    torch.manual_seed(1)  # the same draws again: the result run_cell judged
    result = attack.run(model, x_r[idx], y[idx], Budget("l2", eps), AttackContext(defense, model))
    cands = result.candidates
    assert len(cands) == 4 and len(result.points) == 2
    broken = torch.zeros(len(idx), dtype=torch.bool)
    for c in cands:  # independent worst case: any valid misclassified candidate
        broken |= (model(c).argmax(1) != y[idx]) & (flat_norm(c - x_o[idx], "l2") <= eps * (1 + 1e-4) + 1e-6)
    assert v.robust[idx].tolist() == (~broken).tolist()
    assert (~v.robust[~clean]).all()
    rec = v.extra["rec_dist"][idx]
    assert torch.isfinite(rec).all() and (rec <= 2 * eps + 1e-4).all()  # x_hat_o in B_delta(x_r), x_r in B_delta(x_o)
    assert torch.isfinite(v.extra["adv_dist"][idx]).all()
    # The reconstruction moved x_r (Algorithm 3 ascends the loss within B_delta(x_r)).
    assert (flat_norm(result.points["rec"] - x_r[idx], "l2") > 1e-3).any()


def test_adaptive_attack_without_a_preemptive_defense_is_a_plain_sweep(models, digits_test):
    model = models["linf"]
    x, y = digits_test.x[:16], digits_test.y[:16]
    attack = ATTACKS.create("adaptive_linf", use_autoattack=False, sweep=(0.5, 1.0))
    result = attack.run(model, x, y, Budget("linf", 0.1), AttackContext(DEFENSES.create("none"), model))
    assert torch.equal(result.points["rec"], x) and within(result.images, x, "linf", 0.1)


def test_label_true_reaches_robustify(models, digits_test, monkeypatch):
    seen = {}

    def spy(model, x, y=None):
        seen["y"] = y
        return x

    d = PreemptRobustify(norm="linf", eps=0.1, maxiter=0, label="true")
    monkeypatch.setattr(d, "robustify", spy)
    d.prepare(models["linf"], digits_test.x[:4], digits_test.y[:4])
    assert torch.equal(seen["y"], digits_test.y[:4])
    d.label = "pred"
    seen.clear()
    d.prepare(models["linf"], digits_test.x[:4], digits_test.y[:4])
    assert seen["y"] is None


def test_preempt_robust_recipe_descends_then_attacks(models, digits_test):
    """Algorithm 2: stage 1 goes DOWN the loss within B_delta(x_o) (the paper; the official code ascends)."""
    model, x, y = models["linf"], digits_test.x[:64], digits_test.y[:64]
    torch.manual_seed(0)
    x_r = RECIPES.create("preempt-robust", norm="linf", eps=1e-6, delta=0.1, steps=0)(model, x, y)
    assert within(x_r, x, "linf", 0.1 + 1e-6)
    ce = lambda z: F.cross_entropy(model(z), y).item()  # noqa: E731
    assert ce(x_r) < ce(x)
    torch.manual_seed(0)
    x_a = RECIPES.create("preempt-robust", norm="linf", eps=0.1, steps=5)(model, x, y)
    assert within(x_a, x, "linf", 0.2) and ce(x_a) > ce(x)


def test_cli_preempt_with_adaptive_l2(tmp_path):
    out = tmp_path / "tmp"
    cmd = [sys.executable, "-m", "harness", "run", "--defense", "preempt", "--attack", "adaptive_l2", "--n", "32",
           "--set", "maxiter=10", "--set", "use_autoattack=false", "--out", str(out), "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(out / "results.csv")))
    pre = [r for r in rows if r["defense"] == "preempt"]
    assert pre and all(r["threat"] == "white-box" for r in pre) and pre[0]["norm"] == "l2"
    samples = list(csv.DictReader(open(out / "samples.csv")))
    assert "rec_dist" in samples[0] and "adv_dist" in samples[0]


class _PerSampleAttack(Attack):
    """A stand-in for AutoAttack whose image of a sample does not depend on the other samples of its batch (one
    normalised gradient step of size eps): with it, skipping samples cannot change any other sample's image."""

    calls: list = []

    def __init__(self, version="standard", batch_size=1):
        pass

    def perturb(self, model, x, y, budget, context=None):
        _PerSampleAttack.calls.append(len(x))
        if len(x) == 0:
            return x.clone()
        xa = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xa), y, reduction="sum"), xa)
        step = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return (x + budget.eps * step).clamp(0, 1).detach()


def test_referee_skips_settled_samples_without_changing_any_verdict(models, digits_test, monkeypatch):
    """AutoAttack of the sweep runs only on the samples no earlier candidate settled (valid and misclassified);
    with a per-sample attack in its place the verdicts are exactly those of the run that attacks every sample."""
    import attacks.adaptive as adaptive_mod

    monkeypatch.setattr(adaptive_mod, "AutoAttack", _PerSampleAttack)
    model, eps = models["l2"], 1.0  # a large budget, so that some samples are settled early
    x_o, y = digits_test.x[:40], digits_test.y[:40]
    defense = PreemptRobustify(norm="l2", eps=eps, maxiter=3, steps=3)
    torch.manual_seed(0)
    x_r = defense.robustify(model, x_o)
    clean = model(x_r).argmax(1) == y
    verdicts, calls = {}, {}
    for use_referee in (True, False):
        if not use_referee:  # run_cell then hands the attack referee=None: every sample is attacked
            monkeypatch.setattr("harness.threat.Referee", lambda judge: None)
        _PerSampleAttack.calls = []
        attack = AdaptiveReconstruction(steps=5)
        torch.manual_seed(1)
        verdicts[use_referee] = run_cell(defense, model, attack, "white-box", Budget("l2", eps), x_o, x_r, y, clean)
        calls[use_referee] = list(_PerSampleAttack.calls)
    with_ref, without = verdicts[True], verdicts[False]
    assert torch.equal(with_ref.robust, without.robust) and torch.equal(with_ref.valid, without.valid)
    assert torch.allclose(with_ref.dist, without.dist, equal_nan=True)
    assert sum(calls[True]) < sum(calls[False]) == 4 * int(clean.sum())  # work was saved, and only that
    assert not (~with_ref.robust[clean]).all() and (~with_ref.robust[clean]).any()  # away from 0% and 100%
