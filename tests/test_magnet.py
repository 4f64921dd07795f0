"""MagNet (Meng & Chen 2017) and Carlini & Wagner's adaptive attack on it: the autoencoder, the detectors' scores
against a hand computation, the thresholds' false-positive rate, the reformer path, the attack's budget and its
advantage over oblivious PGD, caching, and a CLI run."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon

from attacks.magnet_cw import MagNetCW
from attacks.pgd import PGD
from defenses import magnet as magnet_mod
from defenses.magnet import MagNet, jsd, load_or_train_autoencoder, parse_detectors, train_autoencoder
from harness.core.attack import AttackContext
from harness.core.budget import Budget
from harness.cli import main as cli_main
from harness.core.defense import ABSTAIN
from harness.core.errors import UsageError
from harness.core.geometry import flat_norm
from harness.core.registry import ATTACKS, DEFENSES
from harness.data import load
from harness.ood_metrics import auroc
from harness.plugins import load_builtins
from harness.threat import run_cell, within_budget

load_builtins()

pytestmark = pytest.mark.usefixtures("one_thread")

N = 60  # test images for the attack comparisons


@pytest.fixture(scope="module")
def mg():
    """The default defense (l2 + l1 reconstruction-error detectors, 1% FPR each, reformer); the autoencoder is
    trained on first use (about 10 s) and cached."""
    return MagNet()


@pytest.fixture(scope="module")
def adv(models):
    return models["linf"]


@pytest.fixture(scope="module")
def calibrated(mg, adv):
    mg.calibrate(adv)
    return mg


# ------------------------------------------------------------------------------------------------ autoencoder


def test_autoencoder_reconstructs_clean_digits_and_not_noise_or_adversarial_images(mg, adv, digits_test):
    x, y = digits_test.x, digits_test.y
    with torch.no_grad():
        err = lambda z: (z - mg.ae(z)).flatten(1).norm(dim=1)  # noqa: E731
        e_clean = err(x)
        g = torch.Generator().manual_seed(0)
        e_noisy = {s: err((x + s * torch.randn(x.shape, generator=g)).clamp(0, 1)) for s in (0.1, 0.2)}
    e_adv = err(PGD(steps=10).perturb(adv, x, y, Budget("linf", 0.1))).detach()
    assert ((x - mg.ae(x)) ** 2).mean() < 0.005  # per-pixel MSE on clean test images (pixel variance ~0.1)
    assert e_clean.median() < 0.6 * e_noisy[0.2].median()
    # the reconstruction error tells clean images (positive: lower error) from noisy and adversarial ones
    assert auroc(-e_clean, -e_noisy[0.1]) > 0.8 and auroc(-e_clean, -e_adv) > 0.8
    with torch.no_grad():  # the reformer keeps the classifier's clean accuracy (within 2 points)
        assert (adv(mg.ae(x)).argmax(1) == y).float().mean() >= (adv(x).argmax(1) == y).float().mean() - 0.02


def test_training_is_deterministic_cached_and_loaded_weights_only(tmp_path, monkeypatch):
    data = load("digits", "train")
    a = train_autoencoder(data, 2, seed=3)
    b = train_autoencoder(data, 2, seed=3)
    c = train_autoencoder(data, 2, seed=4)
    for (k, va), vb, vc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(va, vb), k
    assert any(not torch.equal(va, vc) for va, vc in zip(a.state_dict().values(), c.state_dict().values()))
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    net, source = load_or_train_autoencoder({"epochs": 2, "seed": 3})
    assert source.startswith(str(tmp_path)) and len(list(tmp_path.glob("magnet-ae-digits-*.pt"))) == 1
    assert all(torch.equal(u, v) for u, v in zip(net.state_dict().values(), a.state_dict().values()))
    assert not any(p.requires_grad for p in net.parameters())
    saved = torch.load(source, weights_only=True)  # a plain state dict
    assert set(saved) == set(a.state_dict())
    open(source, "wb").write(b"damaged")  # a damaged cache file is retrained and replaced
    again, _ = load_or_train_autoencoder({"epochs": 2, "seed": 3})
    assert all(torch.equal(u, v) for u, v in zip(again.state_dict().values(), a.state_dict().values()))
    ckpt = tmp_path / "ae.pt"
    torch.save(a.state_dict(), ckpt)
    d = MagNet(checkpoint=str(ckpt), detectors="l1")
    assert d.describe()["weights"] == magnet_mod.weights_digest(a)


# ------------------------------------------------------------------------------------------------ detectors


def test_scores_equal_a_hand_computation(adv, digits_test):
    x = digits_test.x[:40]
    d = MagNet(detectors="l1,l2,jsd10,jsd40")
    d.calibrate(adv)
    vals = d.detector_values(adv, x)
    with torch.no_grad():
        r = d.ae(x).double().numpy().reshape(len(x), -1)
        z_x, z_r = adv(x).double().numpy(), adv(d.ae(x)).double().numpy()
    xx = x.double().numpy().reshape(len(x), -1)
    np.testing.assert_allclose(vals["l1"].numpy(), np.abs(xx - r).sum(1), rtol=1e-5)
    np.testing.assert_allclose(vals["l2"].numpy(), np.sqrt(((xx - r) ** 2).sum(1)), rtol=1e-5)
    for T in (10, 40):
        p = np.exp(z_x / T) / np.exp(z_x / T).sum(1, keepdims=True)
        q = np.exp(z_r / T) / np.exp(z_r / T).sum(1, keepdims=True)
        hand = np.array([jensenshannon(p[i], q[i]) ** 2 for i in range(len(x))])  # scipy: sqrt(JSD), natural log
        np.testing.assert_allclose(vals[f"jsd{T}"].numpy(), hand, rtol=1e-3, atol=1e-9)
    # the combined score: min_i (1 - D_i / tau_i); the same through ``score`` and the differentiable surrogate
    s_hand = torch.stack([1 - vals[k] / d.thresholds[k] for k in ("l1", "l2", "jsd10", "jsd40")]).amin(0)
    torch.testing.assert_close(d.score(adv, x), s_hand)
    torch.testing.assert_close(d.surrogate_score(adv, x).detach(), s_hand, rtol=1e-5, atol=1e-6)
    assert jsd(torch.zeros(2, 10), torch.zeros(2, 10), 10).abs().max() < 1e-7  # identical distributions


def test_thresholds_give_the_requested_false_positive_rate(adv):
    x = load("digits", "train").x
    for fpr in (0.01, 0.05):
        d = MagNet(detectors="l1,jsd10", fpr=fpr)
        assert d.calibrate(adv, x) == 0.0 and d.tau == 0.0
        vals = d.detector_values(adv, x)
        rates = {k: (v > d.thresholds[k]).float().mean().item() for k, v in vals.items()}
        for k, rate in rates.items():  # each detector rejects at most fpr of the calibration images, and no fewer
            assert fpr - 1 / len(x) < rate <= fpr, (k, rate)
        rejected = (d.classify(adv, x) == ABSTAIN).float().mean().item()
        assert max(rates.values()) <= rejected <= sum(rates.values()) + 1e-9  # rejected if ANY detector fires
    d = MagNet(detectors="l2", fpr=0.01)  # default calibration: the digits training split, all of it
    d.prepare(adv, x[:5], torch.zeros(5, dtype=torch.long))
    assert d.thresholds["l2"] == pytest.approx(-np.sort(-d.detector_values(adv, x)["l2"].numpy())[14], rel=1e-6)


def test_detector_strings():
    assert parse_detectors("l2, L1,jsd10,jsd2.5") == [("l2", "recon", 2), ("l1", "recon", 1), ("jsd10", "jsd", 10.0),
                                                      ("jsd2.5", "jsd", 2.5)]
    assert parse_detectors("none") == []
    for bad in ("l3", "jsd", "jsd0", "l1,l1"):
        with pytest.raises(UsageError):
            parse_detectors(bad)
    with pytest.raises(UsageError):
        MagNet(detectors="none", reformer=False)


# ------------------------------------------------------------------------------------------------ reformer


def test_reformer_path_classifies_ae_x_and_rejects_with_minus_one(calibrated, adv, digits_test):
    mg = calibrated
    x = torch.cat([digits_test.x[:50], (digits_test.x[:10] + 0.3 * torch.randn(10, 1, 8, 8)).clamp(0, 1)])
    with torch.no_grad():
        ref = adv(mg.ae(x)).argmax(1)
    pred = mg.classify(adv, x)
    accepted = mg.score(adv, x) >= 0
    assert (~accepted).sum() >= 5  # heavy noise is rejected
    assert torch.equal(pred[accepted], ref[accepted]) and (pred[~accepted] == ABSTAIN).all()
    with torch.no_grad():  # the white-box surface is model(ae(x)), the oblivious one the bare model
        torch.testing.assert_close(mg.surface(adv, "white-box")(x), adv(mg.ae(x)))
    assert mg.surface(adv, "oblivious") is adv
    only = MagNet(detectors="none")
    assert only.kind == "preprocessor" and torch.equal(only.classify(adv, x), ref)
    det_only = MagNet(reformer=False)
    det_only.calibrate(adv)
    with torch.no_grad():
        bare = adv(x).argmax(1)
    p2 = det_only.classify(adv, x)
    assert torch.equal(p2[accepted], bare[accepted]) and det_only.surface(adv, "white-box") is adv


# ------------------------------------------------------------------------------------------------ attacks


def _success(defense, model, x, y, x_adv):
    """Attacked successfully when rejection counts as defended: accepted and misclassified."""
    pred = defense.classify(model, x_adv)
    return ((pred != y) & (pred != ABSTAIN)).float().mean().item()


@pytest.fixture(scope="module")
def std(frozen_zoo):
    return frozen_zoo("digits_cnn")


@pytest.mark.parametrize("norm,eps,which", [("l2", 1.0, "adv"), ("linf", 0.1, "std")])
def test_adaptive_attacks_beat_oblivious_pgd_and_stay_in_the_ball(calibrated, adv, std, digits_test, norm, eps, which):
    mg, model = calibrated, {"adv": adv, "std": std}[which]  # l1/l2 thresholds do not depend on the classifier
    data = digits_test.take(N)
    keep = mg.classify(model, data.x) == data.y
    x, y = data.x[keep], data.y[keep]
    torch.manual_seed(0)
    obl = PGD(steps=20).perturb(model, x, y, Budget(norm, eps))  # attacks the bare classifier
    surface = mg.surface(model, "white-box")
    cw = MagNetCW().perturb(surface, x, y, Budget(norm, eps), AttackContext(mg, model))
    det = ATTACKS.create("pgd_detector").perturb(surface, x, y, Budget(norm, eps), AttackContext(mg, model))
    s_obl, s_cw, s_det = (_success(mg, model, x, y, z) for z in (obl, cw, det))
    for z in (cw, det):
        assert within_budget(z, x, norm, eps)[0].all() and (flat_norm(z - x, norm) <= eps + 1e-6).all()
        assert z.min() >= 0 and z.max() <= 1
    if norm == "l2":  # adversarially trained model, L2 1.0: oblivious PGD is mostly caught or reformed, the
        assert s_obl < 0.6 and s_cw > 0.8 and s_det > 0.8, (s_obl, s_cw, s_det)  # adaptive attacks break MagNet
    else:  # standard model, Linf 0.1 on 8x8 digits: the detectors hold more, the adaptive attacks still gain a lot
        assert min(s_cw, s_det) > max(2 * s_obl, s_obl + 0.1), (s_obl, s_cw, s_det)


def test_magnet_cw_through_run_cell_and_against_no_defense(calibrated, adv, digits_test):
    data = digits_test.take(30)
    atk = ATTACKS.create("magnet_cw", steps=30, search_steps=2)
    clean = calibrated.classify(adv, data.x) == data.y
    torch.manual_seed(0)
    v = run_cell(calibrated, adv, atk, "white-box", Budget("l2", 1.0), data.x, data.x, data.y, clean)
    assert v.valid.all() and (v.dist[v.attacked] <= 1.0 + 1e-6).all()
    assert v.extra["robust_reject_defended"].float().mean() < 0.5
    none = DEFENSES.create("none")  # no detector: plain C&W L2 through the surface, kept in the ball
    x_adv = MagNetCW().perturb(adv, data.x, data.y, Budget("l2", 1.0), AttackContext(none, adv))
    assert (flat_norm(x_adv - data.x, "l2") <= 1.0).all()
    with torch.no_grad():
        assert (adv(x_adv).argmax(1) != data.y).float().mean() > 0.8
    zero = MagNetCW(steps=3, search_steps=1)  # no budget: x itself comes back
    assert torch.equal(zero.perturb(adv, data.x, data.y, Budget("linf", 0.0), AttackContext(calibrated, adv)), data.x)


def test_cli_run_writes_results(tmp_path):
    out = tmp_path / "run"
    rc = cli_main(["run", "--defense", "magnet", "--attack", "pgd_detector", "--n", "12", "--out", str(out),
                   "--quiet", "--set", "pgd_detector.steps=5"])
    assert rc == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    cell = next(r for r in rows if r["defense"] == "magnet" and r["attack"] == "pgd_detector")
    assert cell["threat"] == "white-box" and cell["det_auroc"] != "" and cell["rejected"] != ""
    assert float(cell["robust_acc"]) <= float(cell["robust_acc_reject_defended"]) <= float(cell["clean_acc"])


def test_magnet_cw_without_a_detector_is_carlini_wagner_l2_as_foolbox_runs_it(adv, digits_test):
    """Peer reference: with no defense, magnet_cw is C&W's L2 attack (same objective, Adam on tanh variables, the
    same search on c).  Foolbox's L2CarliniWagnerAttack with the same settings finds the same successes at the
    same distortions (the budget is the whole image box, so it never binds)."""
    import foolbox as fb

    x, y = digits_test.x[:32], digits_test.y[:32]
    torch.manual_seed(0)
    ours = MagNetCW(steps=100, lr=0.05, c=1.0, search_steps=5, early_stop=False).perturb(adv, x, y,
                                                                                       Budget("l2", 8.0))
    attack = fb.attacks.L2CarliniWagnerAttack(binary_search_steps=5, steps=100, stepsize=0.05, confidence=0,
                                              initial_const=1.0, abort_early=False)
    peer, _, _ = attack(fb.PyTorchModel(adv, bounds=(0, 1), device="cpu"), x, y, epsilons=None)
    with torch.no_grad():
        ok_ours, ok_peer = adv(ours).argmax(1) != y, adv(peer).argmax(1) != y
    assert abs(int(ok_ours.sum()) - int(ok_peer.sum())) <= 1
    both = ok_ours & ok_peer
    d_ours, d_peer = flat_norm(ours - x, "l2")[both], flat_norm(peer - x, "l2")[both]
    assert both.sum() >= 0.9 * ok_peer.sum()
    assert float(d_ours.median()) == pytest.approx(float(d_peer.median()), rel=0.01)  # equal to 1e-6 here
