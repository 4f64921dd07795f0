"""The robustness/accuracy trade-off example (Tsipras et al. 2019; scripts/tradeoff_example.py) under the harness's PGD.

One seeded experiment (n = 4000, d = 1000, p = 0.95, eta = 3/sqrt(d), eps = 2 eta) is shared by the module;
the slides' claims are checked on it, together with the Clopper-Pearson agreement of every empirical accuracy
with its closed form, that the attack stays in its budget, and that it is the attack (not the budget's size or
the [0,1] map) that takes f_std down.
"""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
from scipy.stats import beta

pytestmark = pytest.mark.usefixtures("one_thread")

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "tradeoff_example.py"
N, D, P, SEED = 4000, 1000, 0.95, 0
ALPHA = 1e-3  # two-sided level of the intervals: a seeded run, so a failure is a real disagreement


def _load():
    spec = importlib.util.spec_from_file_location("tradeoff_example", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


T = _load()


@pytest.fixture(scope="module")
def exp():
    return T.run(n=N, d=D, p=P, seed=SEED)


def clopper_pearson(k: int, n: int, alpha: float = ALPHA) -> tuple[float, float]:
    lo = 0.0 if k == 0 else beta.ppf(alpha / 2, k, n - k + 1)
    hi = 1.0 if k == n else beta.ppf(1 - alpha / 2, k + 1, n - k)
    return float(lo), float(hi)


def test_closed_forms_are_the_slides():
    eta = 3 / math.sqrt(D)
    cf = T.closed_forms(D, P)
    phi3 = 0.5 * (1 + math.erf(3 / math.sqrt(2)))
    assert cf["f_std"][0] == pytest.approx(phi3) and cf["f_std"][0] > 0.99
    assert cf["f_std"][1] == pytest.approx(1 - phi3) and cf["f_std"][1] < 0.01
    assert cf["f_rob"] == (P, P)
    assert T.closed_forms(D, P, eta=eta, eps=1.0)["f_rob"][1] == 0.0  # eps >= 1 can flip x_1


def test_setup(exp):
    assert exp.eta == pytest.approx(3 / math.sqrt(D)) and exp.eps == pytest.approx(2 * exp.eta)
    assert exp.x.shape == (N, D + 1) and set(exp.y.unique().tolist()) == {-1.0, 1.0}
    assert set(exp.x[:, 0].abs().unique().tolist()) == {1.0}
    assert exp.eps_unit == pytest.approx(exp.eps / exp.scale)
    assert exp.attack_params["registry_name"] == "pgd_linf" and exp.attack_params["eps"] == exp.eps_unit
    # the two models are sign(w^T x) on the original coordinates, through the folded affine map
    u = T.to_unit(exp.x, exp.scale)
    with torch.no_grad():
        s_std = T.f_std(D, exp.scale)(u)[:, 1]
        s_rob = T.f_rob(D, exp.scale)(u)[:, 1]
    torch.testing.assert_close(s_std, exp.x[:, 1:].mean(1))
    torch.testing.assert_close(s_rob, exp.x[:, 0])


def test_sampling_is_seeded():
    a, b, c = T.sample(50, 20, seed=3), T.sample(50, 20, seed=3), T.sample(50, 20, seed=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])


def test_slide_claims(exp):
    std, rob = exp.results["f_std"], exp.results["f_rob"]
    assert std.standard > 0.99
    assert std.robust < 0.01
    tol = 4 * math.sqrt(P * (1 - P) / N)  # binomial (normal approximation) tolerance, ~1.4 points at n = 4000
    assert abs(rob.standard - P) < tol
    assert abs(rob.robust - P) < tol
    assert std.standard > rob.standard and rob.robust > std.robust  # the trade-off


@pytest.mark.parametrize("name", ["f_std", "f_rob"])
@pytest.mark.parametrize("which", ["standard", "robust"])
def test_agrees_with_closed_form(exp, name, which):
    r = exp.results[name]
    correct = r.clean_correct if which == "standard" else r.adv_correct
    lo, hi = clopper_pearson(int(correct.sum()), N)
    closed = r.closed[0] if which == "standard" else r.closed[1]
    assert lo <= closed <= hi, f"{name} {which}: closed form {closed:.4f} outside CP [{lo:.4f}, {hi:.4f}]"


def test_attack_respects_budget(exp):
    for r in exp.results.values():
        assert r.linf.max().item() <= exp.eps + 1e-6
        assert r.linf_unit.max().item() <= exp.eps_unit + 1e-6
        assert r.inside  # the [0,1] clamp of harness.core.geometry.project never acted: an unconstrained Linf attack


def test_attack_is_what_takes_f_std_down(exp):
    std = exp.results["f_std"]
    # on the same samples: correct when clean, wrong when attacked
    flipped = std.clean_correct & ~std.adv_correct
    assert flipped.double().mean().item() > 0.98
    assert std.linf[flipped].min().item() > 0  # every flipped sample was actually moved
    # PGD reaches the optimal Linf attack on a linear model (shift every weak feature by -eps y): it leaves
    # correct exactly the samples with y * mean(weak) > eps
    oracle = exp.y * exp.x[:, 1:].mean(1) > exp.eps
    assert torch.equal(std.adv_correct, oracle)
    # a random perturbation of the same Linf size barely matters: it is the direction that does it
    g = torch.Generator().manual_seed(1)
    noise = exp.eps * (torch.randint(0, 2, exp.x.shape, generator=g).to(exp.x.dtype) * 2 - 1)
    rand_correct = torch.sign((exp.x + noise)[:, 1:].mean(1)) == exp.y
    assert rand_correct.double().mean().item() > 0.99


def test_f_rob_cannot_be_moved(exp):
    rob = exp.results["f_rob"]
    assert torch.equal(rob.adv_correct, rob.clean_correct)  # sign(x_1) survives any |delta| <= 2 eta < 1
    assert torch.equal(rob.clean_correct, torch.sign(exp.x[:, 0]) == exp.y)


def test_f_rob_falls_once_eps_reaches_one():
    # eta = 0.6 (> 1/2), eps = 1.2: the same PGD flips x_1, as the slide's condition eta < 1/2 says
    e = T.run(n=300, d=100, p=P, seed=2, eta=0.6)
    rob = e.results["f_rob"]
    assert rob.closed[1] == 0.0 and rob.robust == 0.0 and rob.standard > 0.85
    assert rob.linf.max().item() <= e.eps + 1e-6


def test_main_prints_table(capsys):
    assert T.main(["--n", "300", "--d", "200", "--seed", "1", "--p", "0.9"]) == 0
    out = capsys.readouterr().out
    assert "| f_std |" in out and "| f_rob |" in out and "closed form" in out and "p=0.9" in out
