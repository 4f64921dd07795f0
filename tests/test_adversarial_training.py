"""The adversarial-training recipes (defenses.adversarial_training): each recipe's first update against its paper's
update computed by hand on a linear softmax model (closed-form gradients, no autograd), Free's weight and
perturbation updates from one backward, the batch-function recipes equal to ``fit``, early stopping, the
pseudo-labels, the pass counts and the bad-input errors."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import defenses.adversarial_training as at
from harness.cli import main
from harness.core.errors import UsageError
from harness.core.registry import MODELS, RECIPES
from harness.core.training import fit
from harness.plugins import load_builtins

pytestmark = pytest.mark.usefixtures("one_thread")
load_builtins()

LR, WD, EPS = 0.1, 5e-4, 0.1


# ---------------------------------------------------------------------------------------------------------------
# A linear softmax model z = W x + b on 1x2x2 images: the gradients by hand


def linear_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(3, 4))
        model[1].bias.copy_(torch.randn(3) * 0.1)
    return model.double()


def batch(n: int = 6, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = (0.3 + 0.4 * torch.rand(n, 1, 2, 2, generator=g)).double()  # interior: eps steps never reach 0 or 1
    y = torch.randint(0, 3, (n,), generator=g)
    return x, y


def in_training_order(x, y, seed: int = 0):
    """The single batch as ``train`` sees it in its first epoch (shuffled by ``Generator().manual_seed(seed)``)."""
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    return x[perm], y[perm]


def probs(W, b, x):
    return torch.softmax(x.flatten(1) @ W.T + b, 1)


def ce_grads(W, b, x, y):
    """d mean CE / dW, d/db, and d CE_i / dx_i (per sample, unscaled by 1/n: only its sign is used)."""
    r = probs(W, b, x) - F.one_hot(y, 3).double()
    n = len(x)
    return r.T @ x.flatten(1) / n, r.sum(0) / n, (r @ W).view_as(x)


def sgd_first(W, b, gW, gb, lr=LR):
    """The first step of SGD(momentum 0.9, weight decay WD): the buffer is the gradient plus WD * param."""
    return W - lr * (gW + WD * W), b - lr * (gb + WD * b)


def params(model):
    return model[1].weight.detach().clone(), model[1].bias.detach().clone()


def one_update(recipe, x, y, epochs: int = 1):
    """Train ``recipe`` on the single batch (x, y) (one update per replay) and return (W, b, Trained)."""
    model = linear_model()
    result = at.train(model, x, y, recipe, epochs=epochs, lr=LR, batch_size=len(x), weight_decay=WD, seed=0)
    return (*params(model), result)


def test_fgsm_update_is_goodfellows_mixed_loss():
    x, y = batch()
    W0, b0 = params(linear_model())
    _, _, gx = ce_grads(W0, b0, x, y)
    x_adv = (x + EPS * gx.sign()).clamp(0, 1)
    alpha = 0.3
    gW_c, gb_c, _ = ce_grads(W0, b0, x, y)
    gW_a, gb_a, _ = ce_grads(W0, b0, x_adv, y)
    W_hand, b_hand = sgd_first(W0, b0, alpha * gW_c + (1 - alpha) * gW_a, alpha * gb_c + (1 - alpha) * gb_a)
    W, b, result = one_update(RECIPES.create("fgsm", eps=EPS, alpha=alpha), x, y)
    torch.testing.assert_close(W, W_hand)
    torch.testing.assert_close(b, b_hand)
    # the FGSM gradient, then the clean and the FGSM images: 3 forward and 3 backward passes per image
    assert result.per_image() == (3.0, 3.0)


def test_fast_update_is_fgsm_from_a_uniform_start_at_step_125_eps():
    x_raw, y_raw = batch()
    x, y = in_training_order(x_raw, y_raw)  # the hand computation follows train's order
    W0, b0 = params(linear_model())
    torch.manual_seed(0)  # train seeds the attacks' generator with its seed; the start is its first draw
    x0 = (x + (torch.rand_like(x) * 2 - 1) * EPS).clamp(0, 1)
    _, _, gx = ce_grads(W0, b0, x0, y)
    x1 = torch.minimum(torch.maximum(x0 + 1.25 * EPS * gx.sign(), x - EPS), x + EPS).clamp(0, 1)
    assert (x1 - x).abs().max() <= EPS + 1e-12 and not torch.allclose(x1, x0)
    W_hand, b_hand = sgd_first(W0, b0, *ce_grads(W0, b0, x1, y)[:2])
    W, b, result = one_update(RECIPES.create("fast", eps=EPS), x_raw, y_raw)
    torch.testing.assert_close(W, W_hand)
    torch.testing.assert_close(b, b_hand)
    assert result.per_image() == (2.0, 2.0)


def test_free_updates_weights_and_delta_from_one_backward():
    """m = 2 replays of one minibatch (epochs 2 / m = 1 pass): two updates, each from a single forward/backward at
    x + delta that gives both the weight gradient and delta's; delta carried from the first replay to the second."""
    x_raw, y_raw = batch()
    x, y = in_training_order(x_raw, y_raw)  # the hand computation follows train's order
    W0, b0 = params(linear_model())
    # replay 1 at delta = 0
    gW1, gb1, gd1 = ce_grads(W0, b0, x, y)
    W1, b1 = sgd_first(W0, b0, gW1, gb1)
    buf_W, buf_b = gW1 + WD * W0, gb1 + WD * b0
    delta1 = (EPS * gd1.sign()).clamp(-EPS, EPS)
    # replay 2 at delta1, learning rate after one of two cosine steps: lr * (1 + cos(pi / 2)) / 2
    gW2, gb2, gd2 = ce_grads(W1, b1, x + delta1, y)
    lr2 = LR * 0.5 * (1 + math.cos(math.pi / 2))
    buf_W, buf_b = 0.9 * buf_W + gW2 + WD * W1, 0.9 * buf_b + gb2 + WD * b1
    W2, b2 = W1 - lr2 * buf_W, b1 - lr2 * buf_b
    delta2 = (delta1 + EPS * gd2.sign()).clamp(-EPS, EPS)

    recipe = RECIPES.create("free", eps=EPS, m=2)
    W, b, result = one_update(recipe, x_raw, y_raw, epochs=2)
    torch.testing.assert_close(W, W2)
    torch.testing.assert_close(b, b2)
    torch.testing.assert_close(recipe.delta, delta2)
    assert result.epochs == 1 and result.updates == 2
    assert result.per_image() == (2.0, 2.0)  # one forward and one backward per update: nothing else


def test_trades_update_is_ce_plus_beta_kl_at_the_kl_maximiser():
    x_raw, y_raw = batch()
    x, y = in_training_order(x_raw, y_raw)  # the hand computation follows train's order
    W0, b0 = params(linear_model())
    beta, alpha = 6.0, EPS / 4
    torch.manual_seed(0)
    xa0 = x + 0.001 * torch.randn_like(x)  # TRADES' start, the first draw after the seed
    p, q0 = probs(W0, b0, x), probs(W0, b0, xa0)
    g = (q0 - p) @ W0  # d KL(p || q(x')) / dx' for softmax logits W x' + b
    xa = torch.minimum(torch.maximum(xa0 + alpha * g.view_as(x).sign(), x - EPS), x + EPS).clamp(0, 1)
    q = probs(W0, b0, xa)
    rr = p.log() - q.log()
    d_clean = p * (rr - (p * rr).sum(1, keepdim=True))  # d KL / d clean logits
    d_adv = q - p  # d KL / d adversarial logits
    n = len(x)
    gW_ce, gb_ce, _ = ce_grads(W0, b0, x, y)
    gW = gW_ce + beta / n * (d_clean.T @ x.flatten(1) + d_adv.T @ xa.flatten(1))
    gb = gb_ce + beta / n * (d_clean.sum(0) + d_adv.sum(0))
    W_hand, b_hand = sgd_first(W0, b0, gW, gb)
    W, b, result = one_update(RECIPES.create("trades", eps=EPS, beta=beta, steps=1), x_raw, y_raw)
    torch.testing.assert_close(W, W_hand)
    torch.testing.assert_close(b, b_hand)
    assert result.per_image() == (4.0, 3.0)  # p(x); one attack step; the clean and the adversarial images


# ---------------------------------------------------------------------------------------------------------------
# On the small CNN and the digits


@pytest.fixture(scope="module")
def digits():
    from harness.data import load

    d = load("digits", "train")
    return d.x[:256], d.y[:256]


def cnn(seed: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return MODELS.create("small_cnn", image_size=8, width=8)


def same_weights(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name,kw", [("standard", {}), ("pgd", {"eps": EPS, "steps": 2}), ("fast", {"eps": EPS})])
def test_batch_recipes_train_exactly_as_fit(digits, name, kw):
    x, y = digits
    a = fit(cnn(), x, y, RECIPES.create(name, **kw), epochs=2, batch_size=64)
    result = at.train(cnn(), x, y, RECIPES.create(name, **kw), epochs=2, batch_size=64)
    assert same_weights(a.state_dict(), result.model.state_dict())
    per_step = {"standard": 1, "pgd": 3, "fast": 2}[name]  # PGD-K costs K + 1 forward and backward passes
    assert result.per_image() == (2.0 * per_step, 2.0 * per_step)


def test_fit_delegates_or_refuses_own_loss_recipes(digits):
    """Recipes with their own loss never train silently as CE on a batch: ``fit`` delegates to their ``.fit``
    (with the hook of harness/core/training.py) or calling them as a batch function raises UsageError."""
    x, y = digits
    for name in ("fgsm", "trades", "free", "pseudo-label"):
        recipe = RECIPES.create(name)
        try:
            fit(cnn(), x[:32], y[:32], recipe, epochs=1, batch_size=32)
        except UsageError as err:
            assert "own" in str(err) or "labels" in str(err)
        else:
            assert recipe.last is not None
    with pytest.raises(UsageError, match="early_stop"):
        RECIPES.create("fast", early_stop=True)(cnn(), x[:4], y[:4])


def test_early_stopping_keeps_the_best_held_out_epoch(digits):
    x, y = digits
    es = at.EarlyStopping(eps=EPS, steps=3, val=64)
    model = cnn()
    result = at.train(model, x, y, RECIPES.create("pgd", eps=EPS, steps=2), epochs=3, batch_size=64,
                      early_stop=es)
    assert len(result.history) == 3 and result.n_train == 256 - 64
    robust = [r for _, r in result.history]
    assert result.best_epoch == robust.index(max(robust)) + 1
    tr, va = es.split(len(x), 0)
    assert es.score(model, x[va], y[va])[1] == max(robust)  # the weights handed back are the best epoch's
    # the evaluation does not disturb training: the last epoch's weights are fit's on the rest
    ref = fit(cnn(), x[tr], y[tr], RECIPES.create("pgd", eps=EPS, steps=2), epochs=3, batch_size=64)
    assert same_weights(ref.state_dict(), result.last_state)
    assert result.eval_forwards == 3 * 64 * (3 + 2) and result.eval_backwards == 3 * 64 * 3  # counted apart
    assert result.per_image() == (9.0, 9.0)
    assert isinstance(RECIPES.create("trades", early_stop=True, val=0.2).early_stop, at.EarlyStopping)


def test_pseudo_labels_replace_the_pool_labels(digits):
    x, y = digits
    from harness.models.zoo import load_zoo

    teacher = load_zoo("digits_cnn")
    recipe = RECIPES.create("pseudo-label", labeled=0.25)
    settings = {"epochs": 1, "lr": LR, "batch_size": 64, "weight_decay": WD, "seed": 0}
    xs, ys = recipe.prepare(cnn(), x, y, settings)
    lab, pool = recipe.split(len(x), 0)
    assert len(lab) == 64 and len(pool) == 192 and torch.equal(xs, x)
    assert torch.equal(ys[lab], y[lab])
    with torch.no_grad():
        assert torch.equal(ys[pool], teacher(x[pool]).argmax(1))
    assert recipe.extra["pool"] == 192 and recipe.extra["teacher_forwards"] == 192
    # a count; no pool: the labeled part alone, with the updates of the whole split
    only = RECIPES.create("pseudo-label", labeled=64, use_pool=False)
    xs, ys = only.prepare(cnn(), x, y, settings)
    assert len(xs) == 64 and only.passes(1) == 4
    # step 1 of the algorithm as written: a standard teacher trained on the labeled part, its passes counted
    own = RECIPES.create("pseudo-label", labeled=64, teacher="labeled", steps=1)
    result = at.train(cnn(), x, y, own, epochs=1, batch_size=64)
    assert result.extra["teacher_backwards"] == 4 * 64 and result.extra["teacher_forwards"] == 4 * 64 + 192
    assert result.forwards == 256 * 2 + 4 * 64 + 192


@pytest.mark.parametrize("name,kw", [
    ("free", {"m": 0}), ("free", {"m": -3}), ("free", {"m": 2.5}),
    ("fgsm", {"alpha": 1.5}), ("fgsm", {"alpha": -0.1}),
    ("trades", {"beta": -1.0}), ("trades", {"beta": float("nan")}), ("trades", {"steps": 0}),
    ("fast", {"eps": 0.0}), ("fast", {"alpha": -1.0}),
    ("pseudo-label", {"labeled": 0.0}), ("pseudo-label", {"labeled": 2.5}), ("pseudo-label", {"teacher": ""}),
    ("fgsm", {"early_stop": True, "val": 0.0}),
])
def test_bad_input_is_a_usage_error(name, kw):
    with pytest.raises(UsageError):
        RECIPES.create(name, **kw)


@pytest.mark.parametrize("setting", ["m=0", "alpha=2", "beta=-1"])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, setting):
    recipe = {"m": "free", "alpha": "fgsm", "beta": "trades"}[setting.split("=")[0]]
    assert main(["train", "--recipe", recipe, "--set", setting, "--epochs", "1", "--out", str(tmp_path / "m.pt"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("harness: error:") and "\n" not in err
    assert not (tmp_path / "m.pt").exists()


def test_labeled_and_val_counts_out_of_range():
    with pytest.raises(UsageError):
        at.labeled_count(300, 256)
    with pytest.raises(UsageError):
        at.EarlyStopping(val=256).split(256, 0)
