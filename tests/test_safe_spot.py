"""Safe-spot search (safe-spot paper, section 3.2 and section 4: S-FGSM, S-PGD, S-Full = Algorithm 1), the
``safe_spot`` defense, and safe-spot-aware adversarial training (section 3.5: recipes ``s-fgsm+adv`` / ``s-pgd+adv``,
zoo ``digits_cnn_sfgsm_adv`` / ``digits_cnn_spgd_adv``)."""
from __future__ import annotations

import csv

import pytest
import torch
import torch.nn.functional as F

from attacks.pgd import PGD
from defenses.preempt import PreemptRobustify
from defenses.safe_spot import SafeSpot, safe_spot_adversarial, targeted_search
from harness.cli import main as harness_main
from harness.core.budget import Budget
from harness.core.geometry import flat_norm
from harness.core.registry import ATTACKS, DEFENSES, RECIPES, ZOO
from harness.entrants import Entrant
from harness.engine import evaluate
from harness.plugins import load_builtins

load_builtins()
BUDGET = {"linf": ("digits_cnn_adv", 0.1), "l2": ("digits_cnn_adv_l2", 0.5)}


pytestmark = pytest.mark.usefixtures("one_thread")


def within(x, center, norm, r):
    return bool((flat_norm(x - center, norm) <= r * (1 + 1e-4) + 1e-6).all())


def ce(model, x, y):
    with torch.no_grad():
        return F.cross_entropy(model(x), y, reduction="none")


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("method", ["fgsm", "pgd", "full"])
def test_safe_spots_stay_in_delta_ball_and_unit_box(models, digits_test, norm, method):
    _, eps = BUDGET[norm]
    model, x = models[norm], digits_test.x[:32]
    torch.manual_seed(0)
    d = SafeSpot(method=method, norm=norm, eps=eps, maxiter=3, inner_steps=5)
    x_s = d.robustify(model, x)
    assert x_s.shape == x.shape and within(x_s, x, norm, eps)
    assert x_s.min() >= 0 and x_s.max() <= 1
    assert (x_s - x).abs().max() > 0
    # a smaller defender budget than the attacker's is honoured too
    x_s = SafeSpot(method=method, norm=norm, eps=eps, delta=eps / 2, maxiter=2, inner_steps=3).robustify(model, x)
    assert within(x_s, x, norm, eps / 2) and x_s.min() >= 0 and x_s.max() <= 1


def test_s_fgsm_is_one_targeted_fgsm_step_towards_the_prediction(models, digits_test):
    model, x, delta = models["linf"], digits_test.x[:40], 0.1
    with torch.no_grad():
        c = model(x).argmax(1)
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xg), c, reduction="sum"), xg)
    expected = (x - delta * g.sign()).clamp(0, 1)  # DOWN the CE of c(x_o): towards the predicted class
    got = SafeSpot(method="fgsm", eps=delta).robustify(model, x)
    assert torch.allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_s_pgd_descends_the_loss_of_the_predicted_class(models, digits_test, norm):
    _, eps = BUDGET[norm]
    model, x = models[norm], digits_test.x[:64]
    with torch.no_grad():
        c = model(x).argmax(1)
    torch.manual_seed(0)
    x_s = SafeSpot(method="pgd", norm=norm, eps=eps).robustify(model, x)
    before, after = ce(model, x, c), ce(model, x_s, c)
    assert (after <= before + 1e-4).float().mean() >= 0.95
    assert after.mean() < 0.5 * before.mean()
    assert (model(x_s).argmax(1) == c).all()


def test_s_pgd_uses_the_harness_pgd_targeted_without_early_stop(models, digits_test):
    """targeted_search = PGD(targeted, early_stop=False) run from x_o towards the target, step delta/4."""
    model, x = models["linf"], digits_test.x[:16]
    t = torch.full((16,), 3)
    torch.manual_seed(1)
    a = targeted_search(model, x, t, "linf", 0.1, steps=20, random_start=False)
    torch.manual_seed(1)
    b = PGD(steps=20, random_start=False, targeted=True, early_stop=False).iterate(model, x, t, Budget("linf", 0.1), t)
    assert torch.equal(a, b)
    assert ce(model, a, t).mean() < ce(model, x, t).mean()


def test_s_full_is_algorithm_1_of_defenses_preempt_started_at_x_o(models, digits_test):
    model, x = models["linf"], digits_test.x[:16]
    torch.manual_seed(3)
    a = SafeSpot(method="full", eps=0.1, maxiter=4, inner_steps=5).robustify(model, x)
    torch.manual_seed(3)
    b = PreemptRobustify(eps=0.1, maxiter=4, steps=5, init="clean").robustify(model, x)
    assert torch.equal(a, b)


def test_s_pgd_raises_grey_box_robust_accuracy_over_none(models, digits_test):
    """Table 1's direction at small scale: on ADV (digits_cnn_adv), grey-box PGD-20 (step eps/4) robust accuracy
    with S-PGD safe spots exceeds the original images' by >= 5 points (observed 76 -> 90 on the first 100)."""
    model, data = models["linf"], digits_test.take(96)
    defs = [("none", DEFENSES.create("none")), ("s-pgd", DEFENSES.create("safe_spot", method="pgd", eps=0.1))]
    defs = [(n, Entrant.fixed(d, [Budget("linf", 0.1)])) for n, d in defs]
    res = evaluate(model, data, defs, [("pgd", ATTACKS.create("pgd_linf"))], batch_size=500, seed=0,
                   device=torch.device("cpu"))
    acc = {r.defense: 100 * r.worst_case().float().mean().item() for r in res}
    clean = {r.defense: 100 * r.clean.float().mean().item() for r in res}
    assert res[1].cells[0].threat == "grey-box"
    assert acc["s-pgd"] >= acc["none"] + 5, acc
    assert clean["s-pgd"] >= clean["none"] - 1  # the search keeps the predicted class


def test_cli_runs_safe_spot_methods(tmp_path, models):
    out = tmp_path / "run"
    assert harness_main(["run", "--model", "digits_cnn_adv", "--defense", "safe_spot", "--set", "safe_spot.method=fgsm",
                         "--attack", "pgd_linf", "--n", "20", "--out", str(out), "--quiet"]) == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert rows[0]["defense"] == "safe_spot" and rows[0]["threat"] == "grey-box"
    assert harness_main(["run", "--defense", "safe_spot", "--set", "safe_spot.method=sgd", "--n", "5", "--out",
                         str(tmp_path / "bad"), "--quiet"]) == 2


@pytest.mark.parametrize("recipe", ["s-fgsm+adv", "s-pgd+adv"])
def test_safe_spot_aware_training_batch(models, digits_test, recipe):
    """Section 3.5: x_s* in B_delta(x_o) towards the GROUND TRUTH, x_a* in B_eps(x_s*), both in [0, 1]."""
    model, x, y = models["linf"], digits_test.x[:48], digits_test.y[:48]
    method = "fgsm" if recipe == "s-fgsm+adv" else "pgd"
    attack = PGD(steps=5, early_stop=False)
    torch.manual_seed(0)
    x_a, x_s = safe_spot_adversarial(model, x, y, method, "linf", 0.1, 0.1, 10, None, True, attack, return_spot=True)
    assert within(x_s, x, "linf", 0.1) and within(x_a, x_s, "linf", 0.1)
    assert x_a.min() >= 0 and x_a.max() <= 1 and x_s.min() >= 0 and x_s.max() <= 1
    assert ce(model, x_s, y).mean() < ce(model, x, y).mean()  # the safe spot lowers the loss of y_o
    if method == "fgsm":  # exactly the targeted FGSM step on the ground-truth label
        xg = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xg), y, reduction="sum"), xg)
        assert torch.allclose(x_s, (x - 0.1 * g.sign()).clamp(0, 1), atol=1e-6)
    make_batch = RECIPES.create(recipe, eps=0.1, steps=5)
    torch.manual_seed(0)
    xt = make_batch(model, x, y)
    assert xt.shape == x.shape and within(xt, x, "linf", 0.2) and xt.min() >= 0 and xt.max() <= 1


def test_zoo_entries_mirror_the_adv_model():
    adv = ZOO.create("digits_cnn_adv")
    for name, recipe in (("digits_cnn_sfgsm_adv", "s-fgsm+adv"), ("digits_cnn_spgd_adv", "s-pgd+adv")):
        spec = ZOO.create(name)
        assert spec.recipe == recipe and spec.epochs == adv.epochs == 15 and spec.dataset == adv.dataset
        assert spec.arch == adv.arch and spec.arch_kw == adv.arch_kw
        assert {k: spec.recipe_kw[k] for k in ("norm", "eps", "steps")} == adv.recipe_kw  # PGD-5 Linf 0.1
        RECIPES.get(recipe)
    assert ZOO.create("digits_cnn_spgd_adv").recipe_kw["search_steps"] == 10  # section 4.1: 10-step S-PGD
