"""OOD detection (safe-spot paper, section 3.6): metrics, data, the eq. (4) loss, scores, Mahalanobis, detectors in the
harness (rejection columns) and the adaptive ``pgd_detector`` attack."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
from torch import nn

from attacks.pgd import PGD
from defenses.ood import (
    Mahalanobis,
    MSPDetector,
    ThresholdDetector,
    eq4_loss,
    msp,
    oe_loss,
    safe_spot_score,
    train_ood,
    uniform_ce,
    uniform_kl,
)
from defenses.safe_spot import SafeSpot
from harness.core.attack import Attack, AttackContext
from harness.core.budget import Budget
from harness.core.defense import ABSTAIN
from harness.core.geometry import flat_norm
from harness.core.registry import ATTACKS, DEFENSES
from harness.data import load
from harness.data.ood import area_resize, digits_setting
from harness.entrants import Entrant
from harness.engine import CellResult, DefenseResult, evaluate
from harness.models.small import SmallCNN
from harness.ood_metrics import auroc, average_precision, fpr_at_tpr, mean_std, ood_metrics, threshold_at_tpr
from harness.plugins import load_builtins
from harness.report import result_rows, to_markdown
from harness.threat import run_cell

load_builtins()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def adv(frozen_zoo):
    return frozen_zoo("digits_cnn_adv")


# ------------------------------------------------------------------------------------------------ metrics


def fixed_scores():
    rng = np.random.default_rng(0)
    s_in = np.round(rng.normal(1.0, 1.0, 300), 1)  # rounding makes ties, within and across the two sets
    s_out = np.round(rng.normal(0.0, 1.0, 200), 1)
    return s_in, s_out


def test_metrics_agree_with_sklearn_and_a_direct_fpr95():
    s_in, s_out = fixed_scores()
    labels = np.r_[np.ones(len(s_in)), np.zeros(len(s_out))]
    scores = np.r_[s_in, s_out]
    assert auroc(s_in, s_out) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert average_precision(s_in, s_out) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert average_precision(-s_out, -s_in) == pytest.approx(average_precision_score(1 - labels, -scores), abs=1e-12)
    # FPR95, in-distribution positive, directly: the loosest threshold that still accepts >= 95% of the ID scores
    for tau in sorted(set(s_in), reverse=True):
        if np.mean(s_in >= tau) >= 0.95:
            break
    direct = np.mean(s_out >= tau)
    assert fpr_at_tpr(s_in, s_out) == pytest.approx(direct)
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    assert fpr_at_tpr(s_in, s_out) == pytest.approx(fpr[tpr >= 0.95].min())
    # OOD positive (Outlier Exposure's convention): fraction of ID flagged at 95% OOD recall
    fpr_o, tpr_o, _ = roc_curve(1 - labels, -scores, drop_intermediate=False)
    m = ood_metrics(s_in, s_out)
    assert m["fpr95_out"] == pytest.approx(100 * fpr_o[tpr_o >= 0.95].min())
    assert m["auroc"] == pytest.approx(100 * roc_auc_score(labels, scores))
    assert m["aupr"] == pytest.approx(100 * average_precision_score(labels, scores))
    assert m["aupr_out"] == pytest.approx(100 * average_precision_score(1 - labels, -scores))
    assert m["fpr95"] == pytest.approx(100 * direct)


def test_threshold_at_95_tpr_handles_float_rounding_and_ties():
    s = np.arange(20, dtype=float)  # 0.95 * 20 = 19.000000000000004: 19 of 20 must be accepted, not all 20
    assert threshold_at_tpr(s) == 1.0 and np.mean(s >= 1.0) == 0.95
    s = np.array([1.0] * 10 + [0.0] * 10)
    assert threshold_at_tpr(s) == 0.0
    assert fpr_at_tpr([3, 2, 1], [0.5, 1.0, 2.5]) == pytest.approx(2 / 3)  # tau = 1 (all ID): 1.0 and 2.5 pass
    assert auroc([1, 1], [1, 1]) == 0.5
    ms = mean_std([{"a": 1.0}, {"a": 3.0}])
    assert ms["a"][0] == 2.0 and ms["a"][1] == pytest.approx(math.sqrt(2))


# ------------------------------------------------------------------------------------------------ data


def test_area_resize_is_exact_area_averaging():
    x = torch.rand(3, 1, 28, 28)
    y = area_resize(x, 8)
    assert y.shape == (3, 1, 8, 8)
    # direct: pixel (i, j) averages the source square [3.5 i, 3.5 (i+1)) x [3.5 j, 3.5 (j+1)) with partial weights
    w = torch.zeros(8, 28)
    for i in range(8):
        for k in range(28):
            lo, hi = max(k, 3.5 * i), min(k + 1, 3.5 * (i + 1))
            w[i, k] = max(0.0, hi - lo) / 3.5
    direct = torch.einsum("ik,nckl,jl->ncij", w, x, w)
    assert torch.allclose(y, direct, atol=1e-6)
    assert torch.allclose(area_resize(x, 14), F.avg_pool2d(x, 2))


def test_digits_setting_splits_are_disjoint_and_in_range():
    s = digits_setting(seed=0)
    assert s.num_classes == 5 and set(s.in_train.y.tolist()) == set(range(5))
    assert len(s.in_train) + len(s.in_val) == int(torch.isin(load("digits", "train").y, torch.arange(5)).sum())
    assert len(s.in_test) == int(torch.isin(load("digits", "test").y, torch.arange(5)).sum())
    assert "digits 8-9" in s.test_outliers and "Gaussian noise" in s.test_outliers and "Uniform noise" in s.test_outliers
    tr, te = load("digits", "train"), load("digits", "test")
    count = lambda d, cs: int(torch.isin(d.y, torch.tensor(cs)).sum())  # noqa: E731
    assert len(s.train_outliers) == count(tr, [5, 6, 7])  # D_out^train: classes 5-7 of the training split only
    assert len(s.test_outliers["digits 8-9"]) == count(tr, [8, 9]) + count(te, [8, 9])  # never-trained classes
    for name, x in [("train", s.train_outliers), *s.test_outliers.items()]:
        assert x.dim() == 4 and x.shape[1:] == (1, 8, 8) and x.min() >= 0 and x.max() <= 1, name
    if "MNIST 8-9" in s.test_outliers:
        assert len(s.test_outliers["MNIST 8-9"]) == 378
    assert torch.equal(digits_setting(seed=0).test_outliers["Gaussian noise"], s.test_outliers["Gaussian noise"])


# ------------------------------------------------------------------------------------------------ losses


def test_uniform_terms_and_the_eq4_signs():
    z = torch.randn(6, 5)
    p = F.softmax(z, 1)
    kl = (0.2 * (torch.log(torch.tensor(0.2)) - torch.log(p))).sum(1)  # KL(u || C) directly
    assert torch.allclose(uniform_kl(z), kl, atol=1e-5)
    assert torch.allclose(uniform_ce(z), kl + math.log(5), atol=1e-5)
    assert torch.allclose(uniform_kl(torch.zeros(2, 5)), torch.zeros(2), atol=1e-6)
    za, y, zo, zoa, c = torch.randn(4, 5), torch.tensor([0, 1, 2, 3]), torch.randn(3, 5), torch.randn(3, 5), torch.tensor([4, 0, 1])
    loss, terms = eq4_loss(za, y, zo, zoa, c, gamma=0.7, lam=0.3)
    direct = F.cross_entropy(za, y) + 0.7 * uniform_kl(zo).mean() - 0.3 * F.cross_entropy(zoa, c)
    assert torch.allclose(loss, direct) and set(terms) == {"ce_adv_in", "kl_uniform_out", "ce_adv_out"}
    # a descent step on eq. (4) moves the outliers' adversarial logits UP their cross-entropy: the gradient of the
    # loss in those logits is -lam * (softmax - onehot) / n (the minus sign of the third term)
    zoa_g = zoa.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(eq4_loss(za, y, zo, zoa_g, c, gamma=0.7, lam=0.3)[0], zoa_g)
    assert torch.allclose(g, -0.3 * (F.softmax(zoa, 1) - F.one_hot(c, 5)) / 3, atol=1e-6)
    loss, _ = oe_loss(za, y, zo)
    assert torch.allclose(loss, F.cross_entropy(za, y) + 0.5 * (-(zo.mean(1) - torch.logsumexp(zo, 1))).mean())


def test_train_ood_runs_each_objective():
    torch.manual_seed(0)
    s = digits_setting(seed=0, mnist=False)
    x_in, y_in, x_out = s.in_train.x[:128], s.in_train.y[:128], s.train_outliers[:128]
    for obj in ("standard", "oe"):
        h = []
        train_ood(SmallCNN(num_classes=5), x_in, y_in, x_out, obj, epochs=1, history=h)
        assert h and all(math.isfinite(v) for v in h[0].values())
    torch.manual_seed(0)
    m = SmallCNN(num_classes=5)
    h = []
    train_ood(m, x_in[:64], y_in[:64], x_out[:64], "safe_spot", epochs=1, batch_size=64, out_batch_size=64, gamma=0.0,
              lam=1.0, search_steps=2, steps=2, history=h, lr=0.05)
    assert set(h[0]) == {"ce_adv_in", "ce_adv_out"}


# ------------------------------------------------------------------------------------------------ scores


def test_safe_spot_score_is_the_mu_mix_of_two_msps(adv):
    x = load("digits", "test").x[:24]
    spot, pgd = SafeSpot(method="pgd", eps=0.1), PGD(steps=5, early_stop=False)
    torch.manual_seed(0)
    d, parts = safe_spot_score(adv, x, spot, pgd, mu=0.3, parts=True)
    assert torch.allclose(d, 0.3 * parts["msp"] + 0.7 * parts["msp_adv"])
    assert torch.allclose(parts["msp"], msp(adv, x))
    assert (d >= 0).all() and (d <= 1).all() and (parts["msp_adv"] <= parts["msp"] + 1e-6).float().mean() > 0.8
    torch.manual_seed(0)
    d1 = safe_spot_score(adv, x, spot, pgd, mu=1.0)
    assert torch.allclose(d1, msp(adv, x))


def test_mahalanobis_matches_a_direct_computation():
    torch.manual_seed(0)
    lin = nn.Linear(6, 3)
    model = nn.Sequential(nn.Flatten(), lin)  # the features are the Linear layer's input: the raw 6 values
    x = torch.rand(90, 1, 2, 3)
    y = torch.arange(90) % 3
    mh = Mahalanobis(model, layers=[lin]).fit(x, y)
    f = x.flatten(1).double().numpy()
    mus = np.stack([f[y.numpy() == c].mean(0) for c in range(3)])
    cen = f - mus[y.numpy()]
    prec = np.linalg.pinv(cen.T @ cen / len(f))
    q = torch.rand(5, 1, 2, 3)
    fq = q.flatten(1).double().numpy()
    direct = np.max([-0.5 * np.einsum("nd,de,ne->n", fq - mus[c], prec, fq - mus[c]) for c in range(3)], axis=0)
    assert np.allclose(mh.layer_scores(q, 0.0)[:, 0].numpy(), direct, rtol=1e-4)
    # preprocessing moves towards the closest class mean: the score rises
    assert (mh.layer_scores(q, 0.01)[:, 0] >= mh.layer_scores(q, 0.0)[:, 0] - 1e-4).all()
    mh.tune(x, torch.rand(40, 1, 2, 3) * 3 - 1)  # tuned against training outliers only
    assert mh.eps in mh.eps_grid and mh.score(q).shape == (5,)


# ------------------------------------------------------------------------------------------------ harness detectors


class FixedDetector(ThresholdDetector):
    """score = the image's mean pixel; the classifier's prediction otherwise."""

    def _score(self, model, x):
        return x.flatten(1).mean(1)

    def surrogate_score(self, model, x):
        return x.flatten(1).mean(1)


class Label(nn.Module):
    """A 'classifier' whose prediction is round(100 * first pixel) (classes 0..9)."""

    def forward(self, x):
        return F.one_hot((x.flatten(1)[:, 0] * 100).round().long().clamp(0, 9), 10).float() * 10


class Fixed(Attack):
    def __init__(self, images):
        self.images = images

    def perturb(self, model, x, y, budget, context=None):
        return self.images[: len(x)]


def img(label, mean):
    """A 1x2x2 image whose first pixel codes the label and whose mean pixel is ``mean``."""
    first = label / 100
    rest = (4 * mean - first) / 3
    return torch.tensor([first, rest, rest, rest]).view(1, 2, 2)


def test_rejection_columns_on_a_hand_made_case():
    model = Label()
    det = FixedDetector(threshold=0.3)
    y = torch.tensor([1, 2, 3, 4, 5])
    x = torch.stack([img(1, 0.5), img(2, 0.5), img(3, 0.5), img(4, 0.5), img(5, 0.1)])  # sample 4: clean rejected
    clean = det.classify(model, x) == y
    assert clean.tolist() == [True, True, True, True, False]
    assert det.classify(model, x)[4] == ABSTAIN
    # adversarial images: 0 correct & accepted; 1 wrong & accepted; 2 wrong & rejected; 3 correct & rejected
    adv = torch.stack([img(1, 0.6), img(7, 0.6), img(7, 0.1), img(4, 0.2)])
    v = run_cell(det, model, Fixed(adv), "white-box", Budget("linf", 1.0), x, x, y, clean)
    assert v.robust.tolist() == [True, False, False, False, False]  # rejection = not defended
    assert v.extra["robust_reject_defended"].tolist() == [True, False, True, True, False]  # rejection = defended
    assert v.extra["rejected"][:4].tolist() == [0, 0, 1, 1] and math.isnan(v.extra["rejected"][4])
    assert torch.allclose(v.extra["score_adv"][:4], torch.tensor([0.6, 0.6, 0.1, 0.2]))
    res = DefenseResult("det", "detector", clean.cpu(), [CellResult("fixed", "white-box", "linf", 1.0, v)])
    rows = result_rows([res], dataset="d", model="m", seed=0, config_hash="h")
    assert rows[0]["clean_acc"] == "80.00" and rows[0]["robust_acc"] == "20.00"
    assert rows[0]["robust_acc_reject_defended"] == "60.00" and rows[0]["rejected"] == 2
    assert rows[0]["det_auroc"] == "50.00"  # clean 0.5 (x4) above adversarial 0.1 and 0.2, below 0.6 and 0.6: 8/16
    assert rows[1]["attack"] == "worst-case" and rows[1]["robust_acc_reject_defended"] == "60.00"
    assert "robust_acc_reject_defended" in to_markdown(rows, {"dataset": "d", "model": "m", "seed": 0, "config_hash": "h", "note": ""})


def test_detector_threshold_accepts_95_percent_of_its_calibration_split(adv):
    det = MSPDetector()  # calibrated on the first calib_n = 1000 images of the digits training split
    tau = det.calibrate(adv)
    x = load("digits", "train").x[:1000]
    s = msp(adv, x)
    assert tau == pytest.approx(threshold_at_tpr(s)) and (s >= tau).float().mean() >= 0.95
    assert ((s > tau).float().mean() < 0.95) or (s == tau).sum() > 1
    pred = det.classify(adv, x)
    assert ((pred == ABSTAIN) == (s < tau)).all()
    assert MSPDetector(calib_n=None).calibrate(adv) == pytest.approx(threshold_at_tpr(msp(adv, load("digits", "train").x)))


def test_detectors_in_a_harness_run_with_the_adaptive_attack(adv):
    data = load("digits", "test").take(40)
    defs = [("msp", DEFENSES.create("msp_detector")),
            ("ss", DEFENSES.create("safe_spot_ood", calib_n=200, **{"spot.method": "pgd", "spot.steps": 5,
                                                                    "adversary.steps": 5}))]
    atts = [("pgd", ATTACKS.create("pgd_linf")), ("adaptive", ATTACKS.create("pgd_detector", steps=5))]
    defs = [(n, Entrant.fixed(d, [Budget("linf", 0.1)])) for n, d in defs]
    res = evaluate(adv, data, defs, atts, batch_size=500, seed=0, device=torch.device("cpu"))
    for r in res:
        assert r.kind == "detector"
        for c in r.cells:
            v = c.verdict
            assert c.threat == "white-box"
            assert (v.robust <= v.extra["robust_reject_defended"]).all()  # counting rejections can only help
            assert ((v.dist[v.attacked] <= 0.1 + 1e-5)).all()
            assert v.extra["score_adv"][v.attacked].isfinite().all()


def test_pgd_detector_stays_in_the_ball_and_prefers_accepted_misclassification(adv):
    x, y = load("digits", "test").x[:48], load("digits", "test").y[:48]
    det = MSPDetector()
    det.calibrate(adv)
    torch.manual_seed(0)
    xa = ATTACKS.create("pgd_detector").perturb(adv, x, y, Budget("linf", 0.1), AttackContext(det, adv))
    assert (flat_norm(xa - x, "linf") <= 0.1 + 1e-6).all() and xa.min() >= 0 and xa.max() <= 1
    torch.manual_seed(0)
    xp = ATTACKS.create("pgd_linf").perturb(adv, x, y, Budget("linf", 0.1))
    passed = lambda z: ((adv(z).argmax(1) != y) & (msp(adv, z) >= det.tau)).sum()  # noqa: E731
    assert passed(xa) >= passed(xp)
