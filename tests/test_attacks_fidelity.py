"""Fidelity of our attacks against the references (docs/DESIGN.md: torchattacks, Foolbox and pyautoattack).

On the adversarially trained digits model (``digits_cnn_adv``) and all 360 digits test images:

- PGD-20, step eps/4, random start (Linf eps 0.15, robust accuracy about 44%; L2 eps 0.75, about 35%).
  All attacks run, as the engine runs them, on the clean-correct images, each after ``torch.manual_seed(s)``.
  Linf: our random start U(-eps, eps) is drawn from the generator exactly as torchattacks' and Foolbox's, so
  the three trajectories coincide: with ``early_stop=False`` the per-sample robust masks are equal, and
  our default early stopping (a sample stops at its first fooling iterate) only turns robust samples into
  fooled ones, never the reverse.  L2: the three random starts are different laws (ours and Foolbox's
  uniform in the ball by different draws, torchattacks' radius eps*U), so per seed the masks differ on a few
  samples; without random start the masks are equal, and with it the robust accuracy averaged over 8
  seeds is within 1 point of each peer's.
- AutoAttack: our ``autoattack`` (standard) returns exactly the images of a direct pyautoattack call
  with the seed drawn from the same global generator state.  The full standard version on 32 images (all
  four attacks run; FAB-T and Square 5000 queries cost ~20 s per call on a loaded CPU whatever the batch),
  and the single attacks on 24 images with fewer iterations/queries against hand-built reference objects.
"""
from __future__ import annotations

import logging

import foolbox as fb
import pytest
import torch
import torchattacks
from pyautoattack import AutoAttack
from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted

from attacks.autoattack import VERSION_ATTACKS
from attacks.pgd import PGD
from harness.core.budget import Budget
from harness.config import Overrides
from harness.core.errors import UsageError
from harness.core.geometry import flat_norm
from harness.core.registry import ATTACKS
from harness.counting import CountingModel
from harness.plugins import load_builtins
from harness.threat import within_budget

load_builtins()

LINF, L2 = ("linf", 0.15), ("l2", 0.75)
STEPS = 20


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(adv_model, digits_test):
    model = adv_model.eval()
    x, y = digits_test.x, digits_test.y
    assert len(x) == 360
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    return model, x, y, clean


def robust_acc(model, x_adv, y, n_total) -> tuple[torch.Tensor, float]:
    with torch.no_grad():
        robust = model(x_adv).argmax(1) == y
    return robust, 100.0 * robust.sum().item() / n_total


def run_pgd(which, model, x, y, norm, eps, seed, random_start=True, early_stop=True):
    """One PGD-20 (step eps/4) by ``which`` after torch.manual_seed(seed); the final images."""
    torch.manual_seed(seed)
    alpha = eps / 4
    if which == "ours":
        return PGD(steps=STEPS, alpha=alpha, restarts=1, random_start=random_start,
                   early_stop=early_stop).perturb(model, x, y, Budget(norm, eps))
    if which == "torchattacks":
        cls = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
        return cls(model, eps=eps, alpha=alpha, steps=STEPS, random_start=random_start)(x, y)
    cls = fb.attacks.LinfPGD if norm == "linf" else fb.attacks.L2PGD
    attack = cls(abs_stepsize=alpha, steps=STEPS, random_start=random_start)
    _, clipped, _ = attack(fb.PyTorchModel(model, bounds=(0, 1), device="cpu"), x, y, epsilons=[eps])
    return clipped[0]


# ------------------------------------------------------------------------------------------------- PGD
@pytest.mark.parametrize("seed", [0, 1])
def test_pgd_linf_same_trajectories_as_torchattacks_and_foolbox(setup, seed):
    model, x, y, clean = setup
    xc, yc = x[clean], y[clean]
    norm, eps = LINF
    masks, accs = {}, {}
    for which in ("ours", "torchattacks", "foolbox"):
        x_adv = run_pgd(which, model, xc, yc, norm, eps, seed)
        assert flat_norm(x_adv - xc, norm).max() <= eps * (1 + 1e-5)
        masks[which], accs[which] = robust_acc(model, x_adv, yc, len(x))
    no_stop, acc_no_stop = robust_acc(model, run_pgd("ours", model, xc, yc, norm, eps, seed, early_stop=False), yc, len(x))
    print(f"\nLinf {eps} seed {seed}: robust acc ours {accs['ours']:.2f} (no early stop {acc_no_stop:.2f}), "
          f"torchattacks {accs['torchattacks']:.2f}, foolbox {accs['foolbox']:.2f}")
    assert 40 <= accs["ours"] <= 48  # the model is the one the numbers below were read on
    # Same random start, same steps: identical per-sample outcomes without early stopping.
    assert torch.equal(no_stop, masks["torchattacks"])
    assert torch.equal(masks["torchattacks"], masks["foolbox"])
    # Early stopping keeps the first fooling iterate: it can only fool more samples.
    assert not (masks["ours"] & ~no_stop).any()
    for peer in ("torchattacks", "foolbox"):
        assert abs(accs["ours"] - accs[peer]) <= 1.0, (peer, accs)


def test_pgd_l2_same_steps_as_peers_without_random_start(setup):
    model, x, y, clean = setup
    xc, yc = x[clean], y[clean]
    norm, eps = L2
    masks = {w: robust_acc(model, run_pgd(w, model, xc, yc, norm, eps, 0, random_start=False,
                                          early_stop=(w != "ours")), yc, len(x))[0]
             for w in ("ours", "torchattacks", "foolbox")}
    assert torch.equal(masks["ours"], masks["torchattacks"])
    assert torch.equal(masks["ours"], masks["foolbox"])


def test_pgd_l2_within_one_point_of_peers_over_seeds(setup):
    model, x, y, clean = setup
    xc, yc = x[clean], y[clean]
    norm, eps = L2
    seeds = range(8)
    accs = {w: [robust_acc(model, run_pgd(w, model, xc, yc, norm, eps, s), yc, len(x))[1] for s in seeds]
            for w in ("ours", "torchattacks", "foolbox")}
    mean = {w: sum(a) / len(a) for w, a in accs.items()}
    print(f"\nL2 {eps} robust acc, mean of {len(seeds)} seeds: " + ", ".join(f"{w} {m:.2f}" for w, m in mean.items()))
    for w, a in accs.items():
        print(f"  {w:12s} " + " ".join(f"{v:.2f}" for v in a))
    assert 30 <= mean["ours"] <= 40
    for peer in ("torchattacks", "foolbox"):
        assert abs(mean["ours"] - mean[peer]) <= 1.0, (peer, mean)


# ------------------------------------------------------------------------------------------ AutoAttack
def reference_seed(seed: int) -> int:
    torch.manual_seed(seed)
    return int(torch.randint(0, 2**31 - 1, (1,)).item())


@pytest.fixture
def silent_reference():
    logger = logging.getLogger("auto-attack")
    disabled, logger.disabled = logger.disabled, True
    yield
    logger.disabled = disabled


@pytest.mark.slow
def test_autoattack_standard_equals_direct_pyautoattack(setup, silent_reference):
    model, x, y, _ = setup
    x, y = x[:32], y[:32]
    norm, eps = LINF
    ours = ATTACKS.create("autoattack")
    torch.manual_seed(7)
    x_ours = ours.perturb(model, x, y, Budget(norm, eps))
    seed = reference_seed(7)
    assert ours.last_seed == seed
    ref = AutoAttack(model, norm="Linf", eps=eps, seed=seed, version="standard", device=x.device)
    x_ref, _ = ref.run_standard_evaluation(x, y, batch_size=250)
    assert torch.equal(x_ours, x_ref)
    mask_ours, acc = robust_acc(model, x_ours, y, len(x))
    mask_ref, _ = robust_acc(model, x_ref, y, len(x))
    assert torch.equal(mask_ours, mask_ref)
    _, acc_pgd = robust_acc(model, run_pgd("ours", model, x, y, norm, eps, 0), y, len(x))
    print(f"\nAutoAttack standard, Linf {eps}, first 32 images: robust acc {acc:.2f} (PGD-20: {acc_pgd:.2f})")
    assert acc <= acc_pgd


SINGLE = {"apgd-ce": dict(n_iter=20), "apgd-dlr": dict(n_iter=20), "apgd-t": dict(n_iter=10),
          "fab-t": dict(n_iter=10), "square": dict(n_queries=300)}


def direct_single(model, name, norm, eps, seed, x, y):
    """pyautoattack's version='custom' with one attack, set by hand to the standard version's settings."""
    kw = dict(norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, seed=seed, device=x.device)
    aa = AutoAttack(model, attacks=[name], version="custom", **kw)
    if name in ("apgd-ce", "apgd-dlr"):
        aa.apgd = APGDAttack(model, n_iter=SINGLE[name]["n_iter"], n_restarts=1, rho=.75, eot_iter=1,
                             logger=aa.logger, **kw)
    elif name == "apgd-t":
        aa.apgd_targeted = APGDAttack_targeted(model, n_iter=SINGLE[name]["n_iter"], n_restarts=1,
                                               n_target_classes=9, rho=.75, eot_iter=1, logger=aa.logger, **kw)
    elif name == "fab-t":
        aa.fab.n_iter, aa.fab.n_restarts, aa.fab.n_target_classes = SINGLE[name]["n_iter"], 1, 9
    else:
        aa.square.n_queries = SINGLE[name]["n_queries"]
    return aa.run_standard_evaluation(x, y, batch_size=250)[0]


@pytest.mark.parametrize("name", list(SINGLE))
def test_single_autoattack_attacks_equal_direct_pyautoattack(setup, silent_reference, name):
    model, x, y, _ = setup
    x, y = x[:24], y[:24]
    norm, eps = L2
    ours = ATTACKS.create(name, **SINGLE[name])
    torch.manual_seed(3)
    x_ours = ours.perturb(model, x, y, Budget(norm, eps))
    x_ref = direct_single(model, name, norm, eps, reference_seed(3), x, y)
    assert torch.equal(x_ours, x_ref)
    assert flat_norm(x_ours - x, norm).max() <= eps * (1 + 1e-5)
    mask, acc = robust_acc(model, x_ours, y, len(x))
    print(f"\n{name} L2 {eps}: robust acc {acc:.2f} on 24 images")
    assert (~mask).sum() > (~(robust_acc(model, x, y, len(x))[0])).sum()  # it fools some correct images


def test_autoattack_settings_mirror_the_standard_version(setup):
    """Defaults of the single attacks = what pyautoattack's standard version sets; targets capped at C - 1."""
    model = setup[0]
    std = AutoAttack(model, norm="Linf", eps=0.1, seed=0, version="standard")
    for name, sub in (("apgd-ce", "apgd"), ("apgd-dlr", "apgd"), ("apgd-t", "apgd_targeted"), ("fab-t", "fab"),
                      ("square", "square")):
        aa = ATTACKS.create(name).build(model, "cpu", 0, 10, Budget("linf", 0.1))
        assert aa.attacks_to_run == [name] and aa.version == "custom"
        mine, ref = vars(getattr(aa, sub)), vars(getattr(std, sub))
        keys = [k for k, v in ref.items() if isinstance(v, (int, float, str, bool)) and k not in ("loss",)]
        assert {k: mine[k] for k in keys} == {k: ref[k] for k in keys}, name
    for version in ("standard", "plus", "rand"):
        aa = ATTACKS.create("autoattack", version=version).build(model, "cpu", 0, 10, Budget("l2", 0.5))
        assert tuple(aa.attacks_to_run) == VERSION_ATTACKS[version] and aa.version == version
    assert AutoAttack(model, version="rand", eps=0.1).apgd.eot_iter == 20
    aa = ATTACKS.create("autoattack").build(model, "cpu", 0, 5, Budget("linf", 0.1))
    assert aa.apgd_targeted.n_target_classes == 4 and aa.fab.n_target_classes == 4
    with pytest.raises(UsageError, match="at least 4 classes"):
        ATTACKS.create("apgd-t").build(model, "cpu", 0, 3, Budget("linf", 0.1))


# ------------------------------------------------------------------------------------ reproducibility
def test_same_seed_same_images_pgd_adapter_autoattack(setup):
    model, x, y, clean = setup
    xc, yc = x[clean][:64], y[clean][:64]
    attacks = {"pgd": ATTACKS.create("pgd"),
               "ta.PGD": ATTACKS.create("ta.PGD", steps=10, alpha=0.0375),
               "fb.LinfPGD": ATTACKS.create("fb.LinfPGD", steps=10, abs_stepsize=0.0375),
               "apgd-ce": ATTACKS.create("apgd-ce", n_iter=10)}
    for name, attack in attacks.items():
        runs = []
        for seed in (11, 11, 12):
            torch.manual_seed(seed)
            runs.append(attack.perturb(model, xc, yc, Budget("linf", 0.15)))
        assert torch.equal(runs[0], runs[1]), name
        assert not torch.equal(runs[0], runs[2]), name  # the seed is drawn from the global generator


def test_autoattack_does_not_leak_its_reseeding(setup):
    """perturb draws one number from the global generator; pyautoattack's own reseeding stays inside."""
    model, x, y, _ = setup
    attack = ATTACKS.create("apgd-ce", n_iter=5)
    torch.manual_seed(5)
    attack.perturb(model, x[:8], y[:8], Budget("linf", 0.15))
    after = torch.rand(4)
    torch.manual_seed(5)
    torch.randint(0, 2**31 - 1, (1,))
    assert torch.equal(after, torch.rand(4))


# ------------------------------------------------------------------------------------------- adapters
@pytest.mark.parametrize("name,norm,eps,params", [
    ("ta.PGD", "linf", 0.15, dict(steps=STEPS, alpha=0.0375)),
    ("fb.LinfPGD", "linf", 0.15, dict(steps=STEPS, abs_stepsize=0.0375)),
    ("ta.PGDL2", "l2", 0.75, dict(steps=STEPS, alpha=0.1875)),
    ("fb.L2PGD", "l2", 0.75, dict(steps=STEPS, abs_stepsize=0.1875)),
])
def test_adapters_by_name_within_budget_and_lower_accuracy(setup, name, norm, eps, params):
    model, x, y, clean = setup
    xc, yc = x[clean][:128], y[clean][:128]
    counting = CountingModel(model)
    attack = ATTACKS.create(name, **params)
    torch.manual_seed(0)
    x_adv = attack.perturb(counting, xc, yc, Budget(norm, eps))
    ok, _ = within_budget(x_adv, xc, norm, eps)
    assert ok.all() and x_adv.min() >= 0 and x_adv.max() <= 1
    _, acc = robust_acc(model, x_adv, yc, len(xc))
    print(f"\n{name} {norm} {eps}: 128 clean-correct images, robust accuracy {acc:.2f}")
    assert acc < 60
    assert counting.forwards >= STEPS * len(xc) and counting.backwards >= STEPS * len(xc)
    # torchattacks ends with model.train() when the module it holds reports training mode (a fresh wrapper
    # such as CountingModel does): the adapter must leave every module's mode as it was.
    assert counting.training and not any(m.training for m in model.modules())
    # The same run as the library called directly (same steps, step size and random start).
    which = "torchattacks" if name.startswith("ta.") else "foolbox"
    direct = run_pgd(which, model, xc, yc, norm, eps, 0)
    assert torch.equal(robust_acc(model, x_adv, yc, 1)[0], robust_acc(model, direct, yc, 1)[0])


def test_adapters_resolve_any_class_and_parse_set_values(setup):
    model, x, y, clean = setup
    # Not registered up front: resolved on first use, with the class's own parameters.
    assert "steps" in ATTACKS.get("ta.BIM").params
    assert Overrides(["ta.BIM.steps=3", "ta.BIM.alpha=1/40"]).for_plugin(ATTACKS, "ta.BIM") == {"steps": 3, "alpha": 0.025}
    assert ATTACKS.get("fb.LinfBasicIterativeAttack").factory.norms == ("linf",)
    assert ATTACKS.get("ta.PGDL2").factory.norms == ("l2",)
    assert ATTACKS.get("ta.APGD").factory.norms == ("linf", "l2")
    for bad, msg in (("ta.PGX", "did you mean"), ("fb.L1PGD", "L1 norm"), ("fb.Nope", "no attack")):
        with pytest.raises(UsageError, match=msg):
            ATTACKS.get(bad)
    with pytest.raises(UsageError, match="supports norms"):
        ATTACKS.create("ta.PGD").supports(Budget("l2", 0.5))
    with pytest.raises(UsageError, match="no parameter"):
        ATTACKS.create("fb.LinfPGD", stepz=3)
    attack = ATTACKS.create("ta.BIM", steps=3, alpha=0.05)
    assert attack.describe()["param.steps"] == 3 and attack.describe()["library"] == "torchattacks"
    xc, yc = x[clean][:32], y[clean][:32]
    x_adv = attack.perturb(model, xc, yc, Budget("linf", 0.15))
    assert within_budget(x_adv, xc, "linf", 0.15)[0].all()


def test_minimization_attacks_are_projected_onto_the_budget(setup):
    """CW / DeepFool have no budget: torchattacks' images are projected (as Foolbox clips); project=false keeps them."""
    model, x, y, clean = setup
    xc, yc = x[clean][:16], y[clean][:16]
    eps = 0.8  # DeepFool's L2 distances on these images lie between about 0.45 and 1.3
    free = ATTACKS.create("ta.DeepFool", steps=10, project=False).perturb(model, xc, yc, Budget("l2", eps))
    assert (flat_norm(free - xc, "l2") > eps).any()
    kept = ATTACKS.create("ta.DeepFool", steps=10).perturb(model, xc, yc, Budget("l2", eps))
    assert within_budget(kept, xc, "l2", eps)[0].all()
    inside = (flat_norm(free - xc, "l2") <= eps) & (free.flatten(1).min(1).values >= 0) & (free.flatten(1).max(1).values <= 1)
    assert inside.any()
    assert torch.equal(kept[inside], free[inside])
    clipped = ATTACKS.create("fb.L2DeepFoolAttack", steps=10).perturb(model, xc, yc, Budget("l2", eps))
    assert within_budget(clipped, xc, "l2", eps)[0].all()
