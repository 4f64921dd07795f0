"""Units of our PGD / FGSM and their losses, on toy models where the right answer is known in closed form."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attacks.losses import attack_loss
from attacks.pgd import FGSM, PGD
from harness.core.budget import Budget
from harness.core.geometry import flat_norm
from harness.counting import CountingModel

D = 16  # toy inputs: 1 x 4 x 4 images


pytestmark = pytest.mark.usefixtures("one_thread")


def linear_model(weight: torch.Tensor, bias: torch.Tensor) -> nn.Module:
    lin = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        lin.weight.copy_(weight)
        lin.bias.copy_(bias)
    return nn.Sequential(nn.Flatten(), lin).eval()


def margin_model() -> nn.Module:
    """Two classes, logits (s, -s) with s = sum(x - 0.5): class 0 iff the image is brighter than mid-grey."""
    return linear_model(torch.stack([torch.ones(D), -torch.ones(D)]), torch.tensor([-D / 2, D / 2]))


def grey(offsets) -> torch.Tensor:
    return (0.5 + torch.tensor(offsets, dtype=torch.float32)).view(-1, 1, 1, 1).expand(-1, 1, 4, 4).contiguous()


def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * D, 5)).eval()


# ------------------------------------------------------------------------------------------- budget
@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.5)])
@pytest.mark.parametrize("random_start", [True, False])
def test_pgd_and_fgsm_stay_in_the_ball_and_the_box(norm, eps, random_start):
    model = small_cnn()
    torch.manual_seed(1)
    x = torch.rand(64, 1, 4, 4)
    x[:8] = 0.0  # corners of the box: the projection must clip
    x[8:16] = 1.0
    y = torch.randint(0, 5, (64,))
    for attack in (PGD(steps=7, alpha=eps / 2, random_start=random_start, restarts=2),
                   PGD(steps=7, loss="dlr", targeted=True),
                   FGSM()):
        x_adv = attack.perturb(model, x, y, Budget(norm, eps))
        assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
        assert x_adv.min() >= 0 and x_adv.max() <= 1
        assert (flat_norm(x_adv - x, norm) <= eps * (1 + 1e-6)).all()


# --------------------------------------------------------------------------------------------- FGSM
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fgsm_is_one_signed_or_normalised_gradient_step_on_a_linear_model(norm):
    torch.manual_seed(0)
    W, b = torch.randn(3, D), torch.randn(3)
    model = linear_model(W, b)
    x = 0.25 + 0.5 * torch.rand(20, 1, 4, 4)  # far from the box's faces: no clipping at eps 0.1
    with torch.no_grad():
        y = model(x).argmax(1)  # all correct: every sample moves
    # d CE / d x for z = W x + b is W^T (softmax(z) - onehot(y)), per sample.
    z = x.flatten(1) @ W.T + b
    g = ((F.softmax(z, 1) - F.one_hot(y, 3).float()) @ W).view_as(x)
    eps = 0.1
    step = g.sign() if norm == "linf" else g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    expected = x + eps * step
    x_adv = FGSM().perturb(model, x, y, Budget(norm, eps))
    assert torch.allclose(x_adv, expected, atol=1e-6)


# ------------------------------------------------------------------------------------ early stopping
def test_misclassified_samples_are_neither_moved_nor_queried():
    """A model no eps-0.1 step can fool: the M misclassified samples get the clean check (N forwards) only.

    The N - M others get T forward+backward passes, plus at most one final check of the last iterate.
    """
    W = 1e-3 * torch.randn(3, D)
    model = CountingModel(linear_model(W, torch.tensor([10.0, 0.0, 0.0])))  # always predicts class 0
    x = torch.rand(10, 1, 4, 4)
    y = torch.tensor([0, 0, 0, 0, 0, 0, 1, 2, 1, 2])  # the last 4 are misclassified
    n, m, steps = 10, 4, 20
    for early_stop in (True, False):
        model.reset()
        x_adv = PGD(steps=steps, early_stop=early_stop).perturb(model, x, y, Budget("linf", 0.1))
        assert model.forwards - n in ((n - m) * steps, (n - m) * (steps + 1))
        assert model.backwards == (n - m) * steps
        assert torch.equal(x_adv[6:], x[6:])  # not moved
        assert not torch.equal(x_adv[:6], x[:6])  # the correct ones were attacked (and stayed within eps)


def test_fooled_samples_stop_at_their_first_fooling_iterate():
    """One step of 0.1 fools the correct samples; early stopping then drops them: no more passes on them."""
    model = CountingModel(margin_model())
    x = grey([0.01] * 6 + [-0.01] * 4)  # class 0 for the first 6; the last 4 are seen as class 1
    y = torch.zeros(10, dtype=torch.long)
    n, m, steps = 10, 4, 20
    attack = PGD(steps=steps, alpha=0.1, random_start=False)
    x_adv = attack.perturb(model, x, y, Budget("linf", 0.1))
    assert (model(x_adv).argmax(1) == 1).all()
    model.reset()
    attack.perturb(model, x, y, Budget("linf", 0.1))
    # clean check (N), step 1 (N - M), step 2's forward finds them fooled and stops them (N - M).
    assert model.forwards == n + 2 * (n - m) and model.backwards == 2 * (n - m)
    assert torch.allclose(x_adv[:6], x[:6] - 0.1)  # exactly one step, not pushed to the end of the budget
    model.reset()
    PGD(steps=steps, alpha=0.1, random_start=False, early_stop=False).perturb(model, x, y, Budget("linf", 0.1))
    assert model.forwards - n in ((n - m) * steps, (n - m) * (steps + 1))


def test_restarts_only_retry_unfooled_samples():
    model = margin_model()
    # margins 0.005 (fooled by the first run) and 0.3 (sum margin 4.8 > any eps-0.1 move of 1.6: never fooled)
    x = grey([0.005] * 5 + [0.3] * 3 + [-0.02] * 2)
    y = torch.zeros(10, dtype=torch.long)
    attack = PGD(steps=5, restarts=3)
    sizes, fooled, outputs = [], [], []
    run = attack._run

    def recording_run(mdl, x0, yy, budget, t, **kw):
        x_adv, f = run(mdl, x0, yy, budget, t, **kw)
        sizes.append(len(x0))
        fooled.append(int(f.sum()))
        outputs.append(x_adv.clone())
        return x_adv, f

    attack._run = recording_run
    torch.manual_seed(0)
    x_adv = attack.perturb(model, x, y, Budget("linf", 0.1))
    assert sizes == [8, 3, 3] and fooled == [5, 0, 0]
    assert torch.equal(x_adv[:5], outputs[0][:5])  # later restarts left the fooled samples alone
    assert torch.equal(x_adv[8:], x[8:])


# ------------------------------------------------------------------------------------------ targeted
@pytest.mark.parametrize("target", ["least", "random"])
def test_targeted_pgd_reaches_the_target_on_an_easy_model(target):
    torch.manual_seed(0)
    W = torch.randn(4, D)
    model = linear_model(W, torch.zeros(4))
    x = 0.3 + 0.4 * torch.rand(32, 1, 4, 4)
    with torch.no_grad():
        logits = model(x)
    y = logits.argmax(1)
    torch.manual_seed(5)
    x_adv = PGD(steps=30, targeted=True, target=target).perturb(model, x, y, Budget("linf", 0.5))
    if target == "least":
        expected = logits.argmin(1)
    else:  # PGD.choose_targets draws first, right after the clean forward pass
        torch.manual_seed(5)
        expected = (y + torch.randint(1, 4, y.shape)) % 4
    assert (expected != y).all()
    assert torch.equal(model(x_adv).argmax(1), expected)


# --------------------------------------------------------------------------------------------- losses
def test_losses_ce_and_cw_values():
    torch.manual_seed(0)
    z = torch.randn(50, 10)
    y = torch.randint(0, 10, (50,))
    assert torch.allclose(attack_loss(z, y, "ce"), F.cross_entropy(z, y, reduction="sum"))
    others = z.clone()
    others[torch.arange(50), y] = -float("inf")
    margin = others.max(1).values - z[torch.arange(50), y]
    assert torch.allclose(attack_loss(z, y, "cw"), margin.sum())
    per_sample = torch.stack([attack_loss(z[i:i + 1], y[i:i + 1], "cw") for i in range(50)])
    assert torch.equal(per_sample > 0, z.argmax(1) != y)  # CW margin positive iff misclassified
    t = (y + 1) % 10
    per_sample_t = torch.stack([attack_loss(z[i:i + 1], y[i:i + 1], "cw", t[i:i + 1]) for i in range(50)])
    assert torch.equal(per_sample_t > 0, z.argmax(1) == t)


@pytest.mark.parametrize("targeted", [False, True])
def test_dlr_is_invariant_to_scale_and_shift_of_the_logits(targeted):
    torch.manual_seed(0)
    z = torch.randn(50, 10, dtype=torch.float64)
    y = torch.randint(0, 10, (50,))
    t = (y + 3) % 10 if targeted else None
    base = torch.stack([attack_loss(z[i:i + 1], y[i:i + 1], "dlr", None if t is None else t[i:i + 1]) for i in range(50)])
    for scale, shift in ((0.01, 0.0), (3.0, 5.0), (100.0, -7.0)):
        zz = scale * z + shift * torch.randn(50, 1, dtype=torch.float64)  # a shift per sample
        other = torch.stack([attack_loss(zz[i:i + 1], y[i:i + 1], "dlr", None if t is None else t[i:i + 1])
                             for i in range(50)])
        assert torch.allclose(base, other, rtol=1e-9, atol=1e-9)
    assert torch.allclose(attack_loss(z, y, "dlr", t), base.sum())
    if not targeted:  # in [-1, 0] when correct, > 0 when misclassified
        correct = z.argmax(1) == y
        assert ((base[correct] >= -1) & (base[correct] <= 0)).all() and (base[~correct] > 0).all()


@pytest.mark.parametrize("loss", ["ce", "cw", "dlr"])
def test_each_loss_drives_pgd_to_fool_an_easy_model(loss):
    torch.manual_seed(0)
    model = linear_model(torch.randn(4, D), torch.zeros(4))
    x = 0.3 + 0.4 * torch.rand(32, 1, 4, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
    x_adv = PGD(steps=20, loss=loss).perturb(model, x, y, Budget("l2", 2.0))
    assert (model(x_adv).argmax(1) != y).all()


def test_compiled_pgd_equals_eager_pgd(adv_model, digits_test):
    """Issue 16: PGD through torch.compile gives the eager result bit for bit where the backend keeps the kernels
    ("aot_eager": traced forward and backward graphs, no code generation, so the test stays fast on a CPU)."""
    from harness.core.registry import ATTACKS

    x, y = digits_test.x[:64], digits_test.y[:64]
    out = {}
    for mode in ("none", "aot_eager"):
        attack = ATTACKS.create("pgd_linf", steps=5, early_stop=False, compile=mode)
        torch.manual_seed(3)
        out[mode] = attack.perturb(adv_model, x, y, Budget("linf", 0.1))
    assert torch.equal(out["none"], out["aot_eager"])
    assert not torch.equal(out["none"], x)  # not vacuous: the attack moved the images
    assert "compile" not in ATTACKS.create("pgd_linf").describe()  # the eager config hash is unchanged
