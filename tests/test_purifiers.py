"""Preprocessor defenses (HGD, NRP, JATP, quantize) and BPDA: gradients, equivalences, masking, losses, checkpoints.

Trained purifiers are tiny here (1 epoch, a few channels): the properties tested do not need good ones.
The table's direction (oblivious-trained purifiers lose white-box robustness, JATP much less) is shown by the
grids reports/grids/purifiers_*.toml (docs/results/purifiers.md), not tested here.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attacks.bpda import BPDAWrapper, bpda_surface
from attacks.pgd import PGD
from defenses.purifiers import training
from defenses.purifiers.jatp import jatp_loss
from defenses.purifiers.networks import RRDBNet, UNetDenoiser
from defenses.purifiers.quantize import Quantize
from defenses.purifiers.training import DynamicPurifier, Features, PurifierDefense, build_net, train_purifier
from harness.cli import main as cli_main
from harness.core.attack import AttackContext
from harness.core.budget import Budget
from harness.core.capabilities import Approximates, Randomized, Reconstructs, declares
from harness.core.defense import Preprocessor
from harness.core.geometry import flat_norm
from harness.core.errors import UsageError
from harness.core.registry import ATTACKS, DEFENSES
from harness.data import load
from harness.plugins import load_builtins
from harness.threat import run_cell

load_builtins()
TINY = {"nf": 4, "nb": 1, "gc": 4}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def target(frozen_zoo):
    return frozen_zoo("digits_cnn_adv")


@pytest.fixture(scope="module")
def plain_target(frozen_zoo):
    return frozen_zoo("digits_cnn")


@pytest.fixture(scope="module")
def test_data():
    return load("digits", "test")


@pytest.fixture()
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    return tmp_path


class ToyLinear(nn.Module):
    def __init__(self, d=64, k=10, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(d, 6))
        self.head = nn.Linear(6, k)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def forward(self, x):
        return self.head(torch.tanh(self.features(x)))


def _untrained(name: str, **kw) -> PurifierDefense:
    cfg = {**TINY, **kw} if name != "hgd" else kw
    net = build_net(name, 1, cfg).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return PurifierDefense(name, net, {"test": True})


# ------------------------------------------------------------------------------------------ registration


def test_registered_with_typed_params():
    for name in ("hgd", "nrp", "jatp", "quantize"):
        assert name in DEFENSES
    for name in ("hgd", "nrp", "jatp"):
        params = DEFENSES.get(name).params
        assert params["checkpoint"].default is None and params["target"].default == "digits_cnn_adv"
        # no parameter a --set meant for an attack could hit by accident
        assert not {"eps", "norm", "steps", "alpha", "seed"} & set(params)
    assert ATTACKS.get("bpda").factory.adaptive
    assert DEFENSES.get("jatp").params["mode"].parse("obl") == "obl"
    with pytest.raises(UsageError):
        DEFENSES.get("jatp").params["mode"].parse("bogus")


# ------------------------------------------------------------------------------------------ BPDA


def test_bpda_identity_backward_is_the_gradient_at_P_of_x():
    torch.manual_seed(0)
    model = ToyLinear()
    y = torch.tensor([3, 7])
    P = lambda x: torch.round(x * 3) / 3 + 0.1 * torch.sin(5 * x)  # noqa: E731 - non-differentiable (round)
    x = torch.rand(2, 1, 8, 8, requires_grad=True)
    (g_bpda,) = torch.autograd.grad(F.cross_entropy(model(BPDAWrapper(P)(x)), y, reduction="sum"), x)
    z = P(x.detach()).requires_grad_(True)
    (g_at_p,) = torch.autograd.grad(F.cross_entropy(model(z), y, reduction="sum"), z)
    assert torch.equal(g_bpda, g_at_p)
    assert g_bpda.abs().sum() > 0
    # the forward pass is P's, exactly
    assert torch.equal(BPDAWrapper(P)(x), P(x.detach()))


def test_bpda_approx_backward_uses_the_surrogates_jacobian():
    torch.manual_seed(1)
    model = ToyLinear()
    y = torch.tensor([1])
    P = lambda x: torch.round(x * 7) / 7  # noqa: E731
    g_fn = lambda x: x ** 2  # noqa: E731
    x = torch.rand(1, 1, 8, 8, requires_grad=True)
    (g_bpda,) = torch.autograd.grad(F.cross_entropy(model(BPDAWrapper(P, g_fn)(x)), y), x)
    z = P(x.detach()).requires_grad_(True)
    (g_at_p,) = torch.autograd.grad(F.cross_entropy(model(z), y), z)
    assert torch.allclose(g_bpda, g_at_p * 2 * x.detach(), atol=1e-7, rtol=1e-6)


def test_bpda_with_the_exact_surrogate_is_the_white_box_attack():
    """backward=approx with approx = P reproduces white-box PGD through P bit for bit (same seed)."""
    torch.manual_seed(2)
    model = ToyLinear()
    defense = _untrained("jatp")
    defense.approx = defense.purify
    x, y = torch.rand(6, 1, 8, 8), torch.randint(0, 10, (6,))
    torch.manual_seed(5)
    x_wb = PGD(steps=5, early_stop=False).perturb(defense.surface(model, "white-box"), x, y, Budget("linf", 0.1))
    torch.manual_seed(5)
    atk = ATTACKS.create("bpda", backward="approx", **{"inner.steps": 5, "inner.early_stop": False})
    x_bpda = atk.perturb(model, x, y, Budget("linf", 0.1), AttackContext(defense=defense, classifier=model))
    assert torch.equal(x_wb, x_bpda)


class _NoApprox(Preprocessor):
    def purify(self, x):
        return x


class _RandomNoApprox(_NoApprox, Randomized):
    """Declares itself randomized (harness.core.capabilities), nothing else."""


def test_bpda_errors_are_one_line_usage_errors():
    with pytest.raises(UsageError):
        ATTACKS.create("bpda", inner="bpda")
    with pytest.raises(UsageError):
        ATTACKS.create("bpda", backward="nope")
    with pytest.raises(UsageError, match="approx"):
        bpda_surface(_NoApprox(), ToyLinear(), "approx")
    atk = ATTACKS.create("bpda", **{"inner.steps": 3})
    assert atk.inner.steps == 3
    assert ATTACKS.create("bpda").inner.steps == 40  # the part's default, not PGD's 20
    assert (atk._inner_randomized.steps, atk._inner_randomized.early_stop, atk.inner.early_stop) == (3, False, True)
    # one object, many budgets: the budget of each call reaches both inner variants (deterministic and randomized P)
    model, x = ToyLinear(), torch.rand(8, 1, 8, 8)
    y = model(x).argmax(1)
    for defense in (_NoApprox(), _RandomNoApprox()):
        for eps in (0.25, 0.5):
            torch.manual_seed(0)
            x_adv = atk.perturb(model, x, y, Budget("l2", eps), AttackContext(defense, model))
            d = flat_norm(x_adv - x, "l2")
            assert (d <= eps * (1 + 1e-5)).all() and (d > 0.9 * eps).any()
    cw = ATTACKS.create("bpda", inner="ta.CW", **{"inner.c": 10.0, "inner.lr": 0.05})
    assert (type(cw.inner).__name__, cw.describe()["inner"]["param.c"]) == ("ta.CW", 10.0)  # the slides' C&W form
    assert cw.describe(Budget("l2", 0.5))["inner"]["eps"] == 0.5


# ------------------------------------------------------------------------------------------ white-box through P


class Recording(PGD):
    def perturb(self, model, x, y, budget, context=None):
        self.out = super().perturb(model, x, y, budget)
        return self.out


def test_white_box_pgd_through_P_equals_pgd_on_the_composed_model(target, test_data):
    defense = _untrained("hgd")
    x, y = test_data.x[:40], test_data.y[:40]
    clean = defense.classify(target, x) == y
    idx = clean.nonzero().flatten()
    atk = Recording(steps=5)
    torch.manual_seed(11)
    run_cell(defense, target, atk, "white-box", Budget("linf", 0.1), x, x, y, clean)
    composed = nn.Sequential(_Fn(lambda z: defense.net(z).clamp(0, 1)), target)
    torch.manual_seed(11)
    ref = PGD(steps=5).perturb(composed, x[idx], y[idx], Budget("linf", 0.1))
    assert torch.equal(atk.out, ref)
    # and the oblivious threat attacks the bare classifier
    torch.manual_seed(11)
    run_cell(defense, target, atk, "oblivious", Budget("linf", 0.1), x, x, y, clean)
    torch.manual_seed(11)
    assert torch.equal(atk.out, PGD(steps=5).perturb(target, x[idx], y[idx], Budget("linf", 0.1)))


class _Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def test_gradient_masking_is_exposed_by_bpda(plain_target, test_data):
    """Quantization: plain white-box PGD sees zero gradients (high 'robust' accuracy); BPDA breaks it."""
    x, y = test_data.x[:120], test_data.y[:120]
    defense = Quantize(bits=3)
    clean = defense.classify(plain_target, x) == y
    torch.manual_seed(0)
    pgd = run_cell(defense, plain_target, PGD(steps=20), "white-box", Budget("linf", 0.1), x, x, y, clean)
    torch.manual_seed(0)
    bpda = run_cell(defense, plain_target, ATTACKS.create("bpda", **{"inner.steps": 20}), "white-box",
                    Budget("linf", 0.1), x, x, y, clean)
    acc_pgd, acc_bpda = pgd.robust.float().mean().item(), bpda.robust.float().mean().item()
    assert acc_pgd >= 0.85 and acc_bpda <= 0.4, (acc_pgd, acc_bpda)
    assert bpda.valid.all() and (bpda.dist[bpda.attacked] <= 0.1 + 1e-6).all()
    # no gradient reaches the input through round(): the masking is real, not an attack bug
    xa = x[:4].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(plain_target(defense.purify(xa)), y[:4]), xa)
    assert g.abs().sum() == 0


def test_cli_runs_quantize_against_pgd_and_bpda(tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli_main(["run", "--defense", "quantize", "--attack", "pgd_linf", "--attack", "bpda", "--model", "digits_cnn",
                   "--n", "40", "--set", "bpda.inner.steps=10", "--quiet", "--out", str(out)])
    assert rc == 0
    rows = (out / "results.csv").read_text().splitlines()
    cell = {r.split(",")[3]: float(r.split(",")[9]) for r in rows[1:]}
    assert cell["pgd_linf"] > cell["bpda"] + 30
    rc = cli_main(["run", "--defense", "quantize", "--attack", "bpda", "--set", "backward=wrong", "--n", "5", "--quiet",
                   "--out", str(tmp_path / "bad")])
    assert rc == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------ JATP loss


def test_jatp_loss_matches_a_hand_computation():
    torch.manual_seed(3)
    T = ToyLinear().double()
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    p_adv = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    p_nat = (x + 0.01 * torch.randn_like(x)).clamp(0, 1)
    y = torch.tensor([0, 4, 9])
    loss, terms = jatp_loss(T, p_adv, p_nat, x, y, layer="features", alpha=5.0, beta=3.0)
    bce, fsm, w, pix = [], [], [], []
    for i in range(3):
        za, zn = T(p_adv[i:i + 1])[0].tolist(), T(p_nat[i:i + 1])[0].tolist()
        pa = [math.exp(v) / sum(math.exp(u) for u in za) for v in za]
        pn = [math.exp(v) / sum(math.exp(u) for u in zn) for v in zn]
        yi = int(y[i])
        bce.append(-math.log(pa[yi]) - math.log(1 - max(p for k, p in enumerate(pa) if k != yi)))   # eq. 7
        fa, fn = T.features(p_adv[i:i + 1])[0].tolist(), T.features(p_nat[i:i + 1])[0].tolist()
        fsm.append(sum((a - b) ** 2 for a, b in zip(fa, fn)) / len(fa))                                # eq. 8
        w.append(1 - pn[yi])
        pix.append(math.sqrt(sum(v ** 2 for v in (p_adv[i] - x[i]).flatten().tolist())))              # eq. 6
    l_adv = sum(b + 5.0 * f * wi for b, f, wi in zip(bce, fsm, w)) / 3                                  # eq. 9
    expected = l_adv + 3.0 * sum(pix) / 3                                                               # eq. 10
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    assert terms["bce"].item() == pytest.approx(sum(bce) / 3, rel=1e-10)
    assert terms["fsm"].item() == pytest.approx(sum(fsm) / 3, rel=1e-10)
    assert terms["weight"].item() == pytest.approx(sum(w) / 3, rel=1e-10)
    assert terms["pix"].item() == pytest.approx(sum(pix) / 3, rel=1e-10)
    # the "mse" pixel option
    loss_mse, t = jatp_loss(T, p_adv, p_nat, x, y, layer="features", pixel="mse")
    assert t["pix"].item() == pytest.approx(((p_adv - x) ** 2).mean().item(), rel=1e-10)


def test_jatp_full_examples_go_through_P_and_obl_ones_do_not(target, test_data):
    from defenses.purifiers.jatp import _craft
    from defenses.purifiers.training import Context

    x, y = test_data.x[:16], test_data.y[:16]
    cfg = {**training.get_method("jatp").defaults, "train_steps": 3}
    identity = _Fn(lambda z: z)
    outs = {}
    for mode, net in (("full", identity), ("obl", identity), ("full-P", _untrained("jatp").net)):
        torch.manual_seed(0)
        outs[mode] = _craft(Context(net, target, {**cfg, "mode": mode.split("-")[0]}), x, x, y)
    assert torch.equal(outs["full"], outs["obl"])  # P = identity: full = oblivious
    assert not torch.equal(outs["full-P"], outs["obl"])
    for v in outs.values():
        assert (v - x).abs().max() <= 0.1 + 1e-6 and v.min() >= 0 and v.max() <= 1


def test_hgd_full_examples_are_pgd_against_T_of_P(target, test_data):
    """HGD-full (JATP paper eq. 3): with P = identity, its examples are PGD's on the target (same seed)."""
    from defenses.purifiers.hgd import _craft
    from defenses.purifiers.training import Context

    x, y = test_data.x[:16], test_data.y[:16]
    cfg = {**training.get_method("hgd").defaults, "mode": "full", "full_steps": 3}
    torch.manual_seed(0)
    got = _craft(Context(_Fn(lambda z: z), target, cfg), x, x, y)
    torch.manual_seed(0)
    ref = PGD(steps=3, early_stop=False).iterate(target, x, y, Budget("linf", 0.1), None)
    assert torch.equal(got, ref)
    cfg["mode"] = "obl"
    assert _craft(Context(_Fn(lambda z: z), target, cfg), x + 0, x, y) is not None


def test_purifier_approx_is_the_unclamped_network():
    defense = _untrained("jatp")
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(defense.approx(x), defense.net(x))
    assert torch.equal(defense.purify(x), defense.net(x).clamp(0, 1))


# ------------------------------------------------------------------------------------------ outputs, training, checkpoints


@pytest.mark.parametrize("name", ["hgd", "nrp", "jatp"])
def test_purifier_output_stays_in_unit_range(name):
    defense = _untrained(name)
    with torch.no_grad():
        for p in defense.net.parameters():
            p.mul_(25.0)  # push the raw output far outside [0, 1]
        x = torch.rand(8, 1, 8, 8)
        raw, out = defense.net(x), defense.purify(x)
    assert raw.min() < 0 or raw.max() > 1
    assert out.min() >= 0 and out.max() <= 1 and out.shape == x.shape
    assert defense.classify(ToyLinear(), x).shape == (8,)


def test_nrp_dynamic_inference_is_random_and_bounded():
    defense = DynamicPurifier("nrp", nn.Identity(), {})
    assert declares(defense, Randomized) and not declares(PurifierDefense("nrp", nn.Identity(), {}), Randomized)
    assert declares(defense, Approximates) and not declares(defense, Reconstructs)
    assert declares(DEFENSES.create("quantize"), Approximates) and not declares(_NoApprox(), Approximates)
    x = torch.rand(4, 1, 8, 8)
    a, b = defense.purify(x), defense.purify(x)
    assert not torch.equal(a, b)
    assert (a - x).abs().max() <= 16 / 255 + 1e-6 and a.min() >= 0 and a.max() <= 1


def test_training_is_deterministic_cached_and_leaves_the_rng_alone(target, tmp_cache):
    state = torch.get_rng_state()
    kw = dict(train_epochs=1, train_steps=1, **TINY)
    d1 = DEFENSES.create("jatp", **kw)
    assert torch.equal(torch.get_rng_state(), state)
    files = list(tmp_cache.glob("purifier-jatp-digits_cnn_adv-*.pt"))
    assert len(files) == 1
    d2 = DEFENSES.create("jatp", **kw)  # from the cache
    assert d1.describe() == d2.describe() and d1.describe()["weights"] == d2.describe()["weights"]
    # the same settings through train_purifier give the same weights (one training path)
    net = train_purifier("jatp", target, load("digits", "train"), epochs=1, train_steps=1, train_step_size=0.025,
                         **TINY)
    assert training.weights_digest(net) == d1.describe()["weights"]
    assert all(not p.requires_grad for p in d1.parameters())
    assert all(not p.requires_grad for p in target.parameters())
    # a damaged cache file is retrained (same weights) and replaced
    files[0].write_bytes(b"damaged")
    assert DEFENSES.create("jatp", **kw).describe()["weights"] == d1.describe()["weights"]
    # another setting, another cache entry
    DEFENSES.create("jatp", mode="obl", **kw)
    assert len(list(tmp_cache.glob("purifier-jatp-*.pt"))) == 2


@pytest.mark.parametrize("name", ["hgd", "hgd-full", "nrp"])
def test_hgd_and_nrp_train_and_reduce_their_loss(name, target, plain_target):
    data = load("digits", "train")
    sub = (data.x[:192], data.y[:192])
    log = []
    settings = {"hgd": {"pool_copies": 1, "pool_pgd_steps": 2}, "hgd-full": {"mode": "full", "full_steps": 2},
                "nrp": {"train_steps": 2, **TINY, "nf": 8}}[name]
    net = train_purifier(name.split("-")[0], target, sub, epochs=3, log=log,
                         feature_model=plain_target if name == "nrp" else None, **settings)
    assert not net.training and log[-1]["loss"] < log[0]["loss"]
    assert net(sub[0][:2]).shape == (2, 1, 8, 8)


def test_checkpoint_loads_with_weights_only_and_wrong_ones_fail_in_one_line(tmp_path):
    net = build_net("jatp", 1, TINY)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01)
    good = tmp_path / "jatp.pt"
    torch.save(net.state_dict(), good)
    d = DEFENSES.create("jatp", checkpoint=str(good), **TINY)
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(d.purify(x), net.eval()(x).clamp(0, 1))
    assert d.describe()["checkpoint"] == str(good) and d.describe()["target"] is None
    wrong = tmp_path / "hgd.pt"
    torch.save(build_net("hgd", 1, {}).state_dict(), wrong)
    pickled = tmp_path / "module.pt"
    torch.save(net, pickled)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    for path, what in ((wrong, "does not fit"), (pickled, "pickles"), (junk, "junk.pt"),
                       (tmp_path / "missing.pt", "not found")):
        with pytest.raises(UsageError, match=what) as err:
            DEFENSES.create("jatp", checkpoint=str(path), **TINY)
        assert "\n" not in str(err.value)
    # and through the CLI: exit 2, one line on stderr
    rc = cli_main(["run", "--defense", "jatp", "--set", f"checkpoint={wrong}", "--n", "4", "--quiet",
                   "--out", str(tmp_path / "o")])
    assert rc == 2


def test_train_to_file_then_load_as_checkpoint(target, tmp_path):
    """The path `harness train --defense NAME` would take: typed --set settings, a file, then checkpoint=."""
    settings = training.parse_settings("jatp", {"nf": "4", "nb": "1", "gc": "4", "train_steps": "1",
                                                "milestones": "0.5,0.8", "mode": "obl"})
    assert settings["milestones"] == (0.5, 0.8) and settings["nf"] == 4
    with pytest.raises(UsageError):
        training.parse_settings("jatp", {"nope": "1"})
    data = load("digits", "train")
    meta = training.train_to_file("jatp", target, (data.x[:64], data.y[:64]), tmp_path / "p.pt", epochs=1, **settings)
    d = DEFENSES.create("jatp", checkpoint=str(tmp_path / "p.pt"), **TINY)
    assert d.describe()["weights"] == meta["weights"] and (tmp_path / "p.pt.json").exists()


def test_train_command_takes_epochs_from_set_or_flag(tmp_path, monkeypatch):
    """`--set epochs=N` is `--epochs N`; the two disagreeing is a one-line usage error (exit 2)."""
    seen = {}
    monkeypatch.setattr(training, "train_to_file", lambda name, target, data, out, epochs=None, **kw: seen.update(epochs=epochs, **kw))
    base = ["train", "--defense", "hgd", "--target-model", "digits_cnn_adv", "--out", str(tmp_path / "p.pt"), "--quiet"]
    assert cli_main(base + ["--set", "epochs=1", "--set", "lr=0.01"]) == 0
    assert (seen["epochs"], seen["lr"]) == (1, 0.01)  # epochs reached train_to_file once, as its own argument
    assert cli_main(base + ["--set", "epochs=1", "--epochs", "2"]) == 2


def test_features_tap_and_bad_layer():
    T = ToyLinear()
    x = torch.rand(2, 1, 8, 8)
    logits, feat = Features(T, "features")(x)
    assert torch.equal(logits, T(x)) and feat.shape == (2, 6)
    assert torch.equal(Features(T, "logits")(x)[1], T(x))
    with pytest.raises(UsageError, match="no layer"):
        Features(T, "nope")


def test_networks_match_the_official_layouts():
    """Parameter counts of the paper-sized networks (docs/REFERENCE-IMPLEMENTATIONS.md 4, 5a, 5b)."""
    from defenses.purifiers.networks import HGD_PAPER, n_params

    assert n_params(RRDBNet(3, 64, 23, 32)) == 16_550_275
    assert n_params(RRDBNet(3, 64, 3, 32)) == 2_161_795
    assert n_params(UNetDenoiser(3, **HGD_PAPER)) == 11_033_984
    x = torch.rand(2, 1, 8, 8)
    unet = UNetDenoiser(1).eval()
    with torch.no_grad():
        unet.head.weight.zero_()
        assert torch.equal(unet(x), x)  # output = x + residual


def test_eot_averages_fresh_draws_of_a_random_preprocessor(test_data):
    """EOT against dynamic NRP: each of the K draws is a separate call of the surface, with its own noise."""
    from attacks.eot import EOTModel

    defense = DynamicPurifier("nrp", nn.Identity(), {})
    surface = defense.surface(ToyLinear(), "white-box")
    x = test_data.x[:6]
    torch.manual_seed(3)
    ours = EOTModel(surface, 4)(x)
    torch.manual_seed(3)
    probs = torch.stack([F.softmax(surface(x), 1) for _ in range(4)])
    torch.testing.assert_close(ours, probs.mean(0).log())
    assert not torch.allclose(probs[0], probs[1])  # the draws differ


def test_a_purifier_trains_on_its_targets_own_data_by_default(monkeypatch):
    """MNIST zoo targets train on test-train: a purifier for them must not see the held-out test images."""
    seen = {}

    def fake(name, cfg, **kw):
        seen[name] = kw
        return build_net(name, 1, cfg), "fake"

    monkeypatch.setattr(training, "load_or_train", fake)
    for name in ("hgd", "nrp", "jatp"):
        d = DEFENSES.create(name, target="mnist_cnn_adv", data_dir="/nowhere", train_eps=0.3)
        assert (seen[name]["dataset"], seen[name]["split"], seen[name]["data_dir"]) == ("mnist", "test-train", "/nowhere")
        assert d.describe()["train_split"] == "test-train" and "data_dir" not in d.describe()
    assert seen["nrp"]["feature_model"] == "mnist_cnn"          # the standard model of the target's dataset
    DEFENSES.create("jatp", target="digits_cnn_adv")
    assert (seen["jatp"]["dataset"], seen["jatp"]["split"]) == ("digits", "train")
    DEFENSES.create("jatp", target="mnist_cnn_adv", dataset="digits")
    assert (seen["jatp"]["dataset"], seen["jatp"]["split"]) == ("digits", "train")
    assert training.standard_model("digits") == "digits_cnn" and training.standard_model("cifar10") is None


def test_run_puts_a_purifier_in_front_of_the_run_model():
    """``harness run --model M --defense jatp`` trains JATP against M, not against the default target."""
    from argparse import Namespace

    from harness.assembly import defense_context
    from harness.core.defense import RunContext

    data = load("digits", "test")
    args = Namespace(model="digits_cnn", arch=None, dataset="digits", data_dir=None)
    ctx = defense_context(args, data)
    assert ctx == RunContext(dataset="digits", data_dir=None, target="digits_cnn")
    assert ctx.for_defense(DEFENSES.get("jatp").declared("receives")) == {"dataset": "digits", "target": "digits_cnn"}
    args.model = None
    assert defense_context(args, data).target == data.default_model
    args.model, args.arch = "weights.pt", "small_cnn"
    assert "target" not in defense_context(args, data).for_defense(("dataset", "data_dir", "target"))


def test_purifiers_train_at_the_datasets_budget_by_default(shared_data, tmp_path, monkeypatch):
    """digits 0.1, MNIST 0.3 (SSP / eq. 5 steps of a quarter of it), for the defenses and ``harness train``."""
    assert training.default_train_eps("digits_cnn_adv") == 0.1
    assert training.default_train_eps("mnist_cnn_adv", data_dir=str(shared_data)) == 0.3
    seen = {}
    monkeypatch.setattr(training, "train_to_file", lambda name, target, data, out, epochs=None, **kw: seen.update(kw))
    monkeypatch.setattr("harness.assembly.load_model", lambda *a, **k: (None, "mnist_cnn_adv"))
    monkeypatch.setattr("harness.models.zoo.load_zoo", lambda *a, **k: None)
    assert cli_main(["train", "--defense", "nrp", "--target-model", "mnist_cnn_adv", "--dataset", "mnist",
                     "--data-dir", str(shared_data), "--out", str(tmp_path / "p.pt"), "--quiet"]) == 0
    assert (seen["train_eps"], seen["train_step_size"]) == (0.3, 0.075)


def test_bpda_takes_an_inner_attack_without_early_stop():
    """An inner attack whose factory takes no early_stop (fgsm) serves randomized defenses as it is."""
    atk = ATTACKS.create("bpda", inner="fgsm")
    assert type(atk.inner).__name__ == "FGSM" and atk._inner_randomized is atk.inner
