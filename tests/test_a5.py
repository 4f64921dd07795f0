"""A5 (Frosio & Kautz, CVPR 2023; ``defenses/a5``): eq. 5's budget, the CROWN-IBP classifier, A5/O, A5/R, A5/RC.

Small and short on purpose (one thread, digits 8x8, a width-8 ``a5_cnn_small`` trained for 20 epochs): the claims
are directions with exact (Clopper-Pearson) confidence intervals, and soundness (a certified sample is never broken
by PGD).  The two classifiers are cached by ``load_or_train`` (first run about a minute of training).
"""
from __future__ import annotations

import itertools

import pytest
import torch

from harness.api import evaluate
from harness.core.budget import Budget
from harness.core.artifacts import cache_key, load_or_train
from harness.core.errors import UsageError
from harness.core.registry import DEFENSES, MODELS, RECIPES
from harness.data import load
from harness.metrics import accuracy
from harness.plugins import load_builtins

load_builtins()
from attacks.pgd import PGD
from defenses import a5

pytestmark = pytest.mark.usefixtures("one_thread")

EPS = 0.1
ARCH = {"width": 8, "fc": 64}
SCHEDULE = {"start": 3, "length": 6, "milestones": (15,), "lr": 2e-3, "batch_size": 50}
EPOCHS = 20


def trained(eps: float):
    """a5_cnn_small (width 8) trained by ``train_crown_ibp`` at ``eps`` on digits train (eps 0: standard)."""
    spec = {"test": "a5", "eps": eps, "arch": ARCH, "epochs": EPOCHS, **SCHEDULE}

    def train():
        torch.manual_seed(0)
        net = MODELS.create("a5_cnn_small", **ARCH)
        return a5.train_crown_ibp(net, load("digits", "train"), eps, EPOCHS, **SCHEDULE).state_dict()

    state, _ = load_or_train(f"test-a5-cnn-{cache_key(spec)}", train)
    net = MODELS.create("a5_cnn_small", **ARCH)
    net.load_state_dict(state)
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


@pytest.fixture(scope="module")
def robust():
    return trained(EPS)


@pytest.fixture(scope="module")
def standard():
    return trained(0.0)


@pytest.fixture(scope="module")
def test_set():
    data = load("digits", "test")
    return data.x, data.y


def disjoint_above(hi: dict, lo: dict) -> bool:
    """``hi``'s Clopper-Pearson interval lies entirely above ``lo``'s."""
    return hi["ci_low"] > lo["ci_high"]


def pgd_broken(model, x, y):
    """Per sample: PGD-50 on CE or on the CW margin (2 restarts each, Linf EPS around x) finds a misclassified image."""
    broken = torch.zeros(len(y), dtype=torch.bool)
    for loss in ("ce", "cw"):
        x_adv = PGD(steps=50, restarts=2, loss=loss).perturb(model, x, y, Budget("linf", EPS))
        assert (x_adv - x).abs().amax() <= EPS + 1e-6
        with torch.no_grad():
            broken |= model(x_adv).argmax(1) != y
    return broken


def test_perturbation_stays_in_budget():
    """Eq. 5: ||clip(x + dx_D(z)) - x||_inf <= eps_D for any z, x_r in [0, 1]."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 8, 8, generator=g)
    z = 20 * torch.randn(64, 1, 8, 8, generator=g)
    xr = a5.perturb(x, z, 0.3)
    assert (xr - x).abs().amax() <= 0.3 + 1e-6 and xr.min() >= 0 and xr.max() <= 1


def test_worst_case_ce_at_zero_budget_is_the_cross_entropy(standard, test_set):
    """Eqs. 2-3 over the exact margins (eps = 0) equal CE(C(x), y)."""
    x, y = test_set
    lb = a5.margin_lower(standard, x, y, 0.0)
    ce = torch.nn.functional.cross_entropy(standard(x), y)
    assert torch.allclose(a5.worst_case_ce(lb), ce, atol=1e-5)


def test_eps_schedule():
    """SmoothedScheduler (start=3, length=18): 0 in epochs 1-2, increasing, eps from the end of epoch 20 on."""
    vals = [a5.smoothed_eps(s, 0.3, 10) for s in range(250)]
    assert all(v == 0 for v in vals[:21]) and vals[21] > 0
    assert all(b >= a for a, b in itertools.pairwise(vals))
    assert vals[199] < 0.3 and vals[200] == pytest.approx(0.3) and vals[-1] == pytest.approx(0.3)
    assert a5.mix_factor(0.0, 0.3) == 1 and a5.mix_factor(0.3, 0.3) == 0


def test_crown_ibp_training_lowers_certified_error(robust, standard, test_set):
    """CROWN-IBP training: certified accuracy (IBP bound, eps 0.1) well above standard training's (which is ~0)."""
    x, y = test_set
    acc_r = accuracy(a5.certify(robust, x, y, EPS)["ibp"])
    acc_s = accuracy(a5.certify(standard, x, y, EPS)["ibp"])
    assert disjoint_above(acc_r, acc_s), (acc_r, acc_s)
    assert 10 < acc_r["acc"] < 90, acc_r


def test_a5_offline_raises_certified_accuracy_and_stays_sound(robust, test_set):
    """A5/O (eq. 6) at eps_D = 0.2: every ||x_r - x||_inf <= 0.2; IBP-certified accuracy at eps_A = 0.1 rises beyond
    the confidence intervals (here about 51% [46, 56] -> 75% [70, 80] on the 360 test images); no certified sample
    (bare or robustified, IBP or CROWN-IBP) is broken by PGD."""
    x, y = test_set
    d = DEFENSES.create("a5_offline", eps=EPS, delta=0.2)
    assert d.label == "true"
    xr = d.prepare(robust, x, y)  # the engine's call: the ground truth reaches robustify for label="true"
    assert (xr - x).abs().flatten(1).amax(1).max() <= 0.2 + 1e-6 and xr.min() >= 0 and xr.max() <= 1
    bare, defended = a5.certify(robust, x, y, EPS), a5.certify(robust, xr, y, EPS)
    acc_b, acc_d = accuracy(bare["ibp"]), accuracy(defended["ibp"])
    assert disjoint_above(acc_d, acc_b), (acc_d, acc_b)
    assert 10 < acc_b["acc"] and acc_d["ci_high"] < 100, (acc_b, acc_d)
    for images, cert in ((x, bare), (xr, defended)):
        broken = pgd_broken(robust, images, y)
        assert not (broken & (cert["ibp"] | cert["crown-ibp"])).any()
        if images is x:
            assert broken.any()  # PGD does break uncertified bare images: the check has teeth


def test_a5_offline_predicted_label(robust, test_set):
    """label="pred": the engine passes no label; robustify targets C(x)."""
    x, y = test_set
    d = DEFENSES.create("a5_offline", eps=EPS, delta=0.1, label="pred", steps=20)
    xr = d.prepare(robust, x[:50], y[:50])
    with torch.no_grad():
        assert (robust(xr).argmax(1) == robust(x[:50]).argmax(1)).float().mean() > 0.9


def test_a5_robustifier_and_co_training(robust, test_set, tmp_path, monkeypatch):
    """A5/R (eq. 7) and A5/RC (eq. 9), a few epochs: trained on first use and cached (the second instance loads),
    ||x_r - x||_inf <= delta, no label needed; A5/RC classifies with its co-trained C and stays sound."""
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    x, y = test_set
    kw = {"eps": EPS, "delta": 0.3, "epochs": 3, "start": 1, "length": 1, "milestones": (10,)}
    r = DEFENSES.create("a5_robustifier", **kw)
    xr = r.prepare(robust, x, y)
    assert (xr - x).abs().amax() <= 0.3 + 1e-6 and xr.min() >= 0 and xr.max() <= 1
    assert torch.equal(DEFENSES.create("a5_robustifier", **kw).prepare(robust, x, None), xr)  # cached R, no label
    rc = DEFENSES.create("a5_co", co_epochs=2, **kw)
    xc = rc.prepare(robust, x, None)
    assert (xc - x).abs().amax() <= 0.3 + 1e-6
    C = rc.attack_model(robust)
    assert C is not robust and torch.equal(rc.classify(robust, xc), C(xc).argmax(1))
    cert = a5.certify(C, xc, y, EPS)
    assert not (pgd_broken(C, xc, y) & cert["ibp"]).any()
    assert len(list(tmp_path.glob("a5-r-*.pt"))) == 1 and len(list(tmp_path.glob("a5-rc-*.pt"))) == 1
    # run.json names the file the networks came from, though they load only after the run is built
    run = evaluate(robust, "digits", n=20, defenses=[("a5_robustifier", kw), ("a5_co", {"co_epochs": 2, **kw})],
                   attacks=["fgsm"], eps=EPS)
    assert [d["weights"] for d in run.run_info["config"]["defenses"]] == [
        str(next(tmp_path.glob(f"a5-{kind}-*.pt"))) for kind in ("r", "rc")]


def test_recipe_and_errors():
    """``crown-ibp`` recipe: a trainer with ``fit`` (not a batch function); bad settings are usage errors."""
    trainer = RECIPES.create("crown-ibp", eps=0.1, start=1, length=1)
    data = load("digits", "train")
    net = MODELS.create("a5_cnn_small", width=4, fc=16)
    with pytest.raises(UsageError):
        trainer(net, data.x[:4], data.y[:4])
    out = trainer.fit(net, data.x[:100], data.y[:100], epochs=1)
    assert out is net and not net.training
    with pytest.raises(UsageError):
        RECIPES.create("crown-ibp", bound="lp")
    with pytest.raises(UsageError):
        DEFENSES.create("a5_offline", norm="l2")
    with pytest.raises(UsageError):
        DEFENSES.create("a5_robustifier", delta=0.0)


def test_certifier_cells_report_certified_accuracy_and_guard_the_attacks(robust, tmp_path):
    """A certifier runs like an attack cell: results.csv gets certified_acc (the IBP certificates of
    ``harness.bounds``, equal to ``a5.certify``), it stays out of the worst case, and an attack that breaks a
    certified sample is reported as a bug."""
    import csv

    from harness.core.attack import Attack, AttackResult
    from harness.core.registry import ATTACKS
    from harness.data import load as load_data
    from harness.entrants import Entrant
    from harness.engine import evaluate
    from harness.report import write_report

    data = load_data("digits", "test").take(120)
    attacks = [("pgd_linf", ATTACKS.create("pgd_linf")), ("certify_ibp", ATTACKS.create("certify_ibp"))]
    defenses = [("none", Entrant.fixed(DEFENSES.create("none"), [Budget("linf", EPS)]))]
    torch.manual_seed(0)
    res = evaluate(robust, data, defenses, attacks, batch_size=500, seed=0, device=torch.device("cpu"))[0]
    pgd_cell, cert_cell = res.cells
    expected = a5.certify(robust, data.x, data.y, EPS)["ibp"] & res.clean
    assert torch.equal(cert_cell.verdict.robust, expected)
    share = expected.float().mean().item()
    assert 0.1 < share < 0.9  # away from 0% and 100%
    assert torch.equal(res.worst_case(), res.clean & pgd_cell.verdict.robust)  # certificates stay out of it
    assert not (expected & ~pgd_cell.verdict.robust).any()  # PGD breaks no certified sample
    rows = write_report(tmp_path, [res], data.y, {"dataset": "digits", "model": "a5", "seed": 0, "config_hash": "x",
                                                  "note": ""}, {})
    table = {r["attack"]: r for r in csv.DictReader(open(tmp_path / "results.csv"))}
    assert table["certify_ibp"]["certified_acc"] == f"{100 * expected.float().mean().item():.2f}"
    assert table["pgd_linf"]["certified_acc"] == "" and rows

    class OverClaiming(Attack):  # a planted bug: a certifier that certifies every sample
        certifies = True

        def run(self, model, x, y, budget, context=None):
            return AttackResult(x.detach().clone(), extra={"certified": torch.ones(len(x))})

    liar = OverClaiming()
    with pytest.raises(RuntimeError, match="certified by liar are broken by pgd_linf"):
        evaluate(robust, data, defenses, attacks[:1] + [("liar", liar)], batch_size=500, seed=0,
                 device=torch.device("cpu"))
