"""The adversarial-training family of the lecture (``../shared/seeds/lecture-defenses-against-adversarial-attacks.md``,
the slides "FGSM adversarial training" to "Adversarial training with additional unlabeled data") as training recipes.

    fgsm          Goodfellow, Shlens & Szegedy, ICLR 2015: alpha CE(x) + (1 - alpha) CE(x + eps sign grad_x CE(x))
    fast          Wong, Rice & Kolter, ICLR 2020 ("Fast is better than free"): FGSM from a uniform random start
    free          Shafahi et al., NeurIPS 2019 ("Adversarial training for free!"): m replays, one backward each
    trades        Zhang et al., ICML 2019: CE(f(x), y) + beta KL(f(x) || f(x')), x' maximising the KL
    pseudo-label  Carmon et al., NeurIPS 2019 ("Unlabeled data improves adversarial robustness"): PGD adversarial
                  training on labeled + pseudo-labeled data
and early stopping (Rice, Wong & Kolter, ICML 2020, "Overfitting in adversarially robust deep learning") for any
recipe: ``early_stop=True`` on the recipes here, ``train(..., early_stop=EarlyStopping(...))`` around any other
(``standard``, ``pgd``, a third party's batch function).

How they train.  ``harness.core.training.fit`` minimises CE(model(make_batch(model, x, y)), y); of the recipes here
only ``fast`` (and ``fgsm`` with ``alpha=0``) is CE on a crafted batch.  FGSM-AT's mixed loss, TRADES' KL term,
Free's replays with a perturbation carried across minibatches, the pseudo-labels (which replace labels ``fit``
would take from the split) and early stopping (an evaluation per epoch, a checkpoint restored at the end) are not.
So every recipe here returns a ``Recipe``: it has ``fit(model, x, y, *, epochs, lr, batch_size, weight_decay,
seed, quiet, desc)`` (``fit``'s signature; what ``harness train`` needs ``fit`` to delegate to) and is callable as
``fit``'s batch function where it is one, else calling it raises ``UsageError``.  Its loop, ``train``, keeps
``fit``'s conventions: SGD with momentum 0.9 and weight decay, cosine decay of the learning rate to 0 over all
weight updates (one ``sched.step()`` per update), shuffling from ``torch.Generator().manual_seed(seed)``,
``torch.manual_seed(seed)`` for the attacks' random starts, attacks in eval mode, the loss step in train mode, the
model handed back in eval mode.  On a batch-function recipe (``standard``, ``pgd``, ``fast``) without early stopping
``train`` gives exactly ``fit``'s weights.

Cost.  ``train`` counts forward and backward passes through the model per sample (``PassCounter``: hooks, the model
is not wrapped): ``standard`` costs 1 + 1 per training image and epoch, PGD-K adversarial training K + 1 of each,
FGSM-AT 3 + 3 (the FGSM gradient, then the clean and the FGSM images), Fast 2 + 2, Free 1 + 1 per replay (its
epochs are divided by m, so E epochs of Free cost about what E epochs of standard training do), TRADES with K steps
K + 3 forwards (p(x) for the attack, then both images) and K + 2 backwards.  The held-out evaluation of early
stopping is counted apart (``Trained.eval_forwards``, ``eval_backwards``).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from attacks.pgd import pgd
from harness.core.errors import UsageError
from harness.core.geometry import NORMS, ascent_direction, flat_norm, project
from harness.core.registry import RECIPES
from harness.core.training import BatchFn, OwnLoop, fit

# ---------------------------------------------------------------------------------------------------------------
# Counting and early stopping


class PassCounter:
    """Per-sample forward and backward passes through ``model``: a forward hook adds the batch size for every
    call, and a gradient hook on the logits adds it again when they receive a gradient.  ``close()`` removes it."""

    def __init__(self, model: nn.Module):
        self.forwards = 0
        self.backwards = 0
        self._handle = model.register_forward_hook(self._forward)

    def _forward(self, module, inputs, out) -> None:
        n = out.shape[0]
        self.forwards += n
        if out.requires_grad:
            out.register_hook(lambda g: self._backward(n))

    def _backward(self, n: int) -> None:
        self.backwards += n

    @property
    def counts(self) -> tuple[int, int]:
        return self.forwards, self.backwards

    def close(self) -> None:
        self._handle.remove()


def held_out_count(val: float, n: int) -> int:
    """``val`` < 1 is a fraction of ``n``, ``val`` >= 1 a count; at least one image held out, one left."""
    k = round(val * n) if val < 1 else int(val)
    if not 1 <= k < n:
        raise UsageError(f"val={val:g} holds out {k} of {n} training images; it must leave at least one on each side")
    return k


@dataclass
class EarlyStopping:
    """Rice, Wong & Kolter 2020 (section 3, "early stopping"): hold out ``val`` of the training images (a fraction
    < 1, or a count; they hold out 1,000 CIFAR-10 training images), train on the rest, score each epoch's weights by
    their robust accuracy under PGD-``steps`` (step ``alpha``, default eps/4, random start) on the held-out images
    and hand back the best epoch's weights (the earliest on a tie).  The evaluation runs under its own seed
    (``torch.random.fork_rng``), so the training trajectory is the one training on the rest without it."""

    norm: str = "linf"
    eps: float = 0.1
    steps: int = 10
    alpha: float | None = None
    val: float = 0.1
    seed: int = 0

    def __post_init__(self):
        check_budget(self.norm, self.eps)
        if self.steps < 1:
            raise UsageError(f"early stopping: steps must be at least 1, got {self.steps}")
        if not self.val > 0:
            raise UsageError(f"val must be positive (a fraction < 1 or a count of held-out images), got {self.val}")

    def split(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(training indices, held-out indices), sorted, from a generator of their own."""
        k = held_out_count(self.val, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        return perm[k:].sort().values, perm[:k].sort().values

    def score(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> tuple[float, float]:
        """(clean accuracy, PGD robust accuracy) of ``model`` on (x, y), in [0, 1]."""
        was_training = model.training
        model.eval()
        clean = robust = 0
        devices = [x.device.index or 0] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            for i in range(0, len(x), batch_size):
                xb, yb = x[i:i + batch_size], y[i:i + batch_size]
                xa = pgd(model, xb, yb, norm=self.norm, eps=self.eps, steps=self.steps, alpha=self.alpha)
                with torch.no_grad():
                    clean += (model(xb).argmax(1) == yb).sum().item()
                    robust += (model(xa).argmax(1) == yb).sum().item()
        model.train(was_training)
        return clean / len(x), robust / len(x)


@dataclass
class Trained:
    """What ``train`` hands back: the model (eval mode; with early stopping, the best epoch's weights) and its cost.

    ``forwards``/``backwards``: per-sample passes through the model in training (the teacher's of ``pseudo-label``
    included, ``extra`` says which); ``eval_*``: those of the held-out evaluation.  ``history``: per epoch (clean,
    robust) held-out accuracy; ``best_epoch`` (1-based) and ``last_state`` (the final weights) with early stopping.
    """

    model: nn.Module
    n_train: int
    epochs: int
    updates: int
    forwards: int = 0
    backwards: int = 0
    eval_forwards: int = 0
    eval_backwards: int = 0
    history: list[tuple[float, float]] = field(default_factory=list)
    best_epoch: int | None = None
    last_state: dict | None = None
    extra: dict = field(default_factory=dict)

    def per_image(self, n: int | None = None) -> tuple[float, float]:
        """Training passes per image of the training split (``n``; default the images trained on)."""
        n = n or self.n_train
        return self.forwards / n, self.backwards / n


# ---------------------------------------------------------------------------------------------------------------
# Checks


def check_budget(norm: str, eps: float) -> None:
    if norm not in NORMS:
        raise UsageError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if not (eps > 0 and math.isfinite(eps)):
        raise UsageError(f"eps must be positive, got {eps}")


def check_steps(name: str, steps: int, alpha: float | None) -> None:
    if int(steps) != steps or steps < 1:
        raise UsageError(f"{name}: steps must be an integer >= 1, got {steps}")
    if alpha is not None and not (alpha > 0 and math.isfinite(alpha)):
        raise UsageError(f"{name}: the step size alpha must be positive, got {alpha}")


# ---------------------------------------------------------------------------------------------------------------
# Recipes and the loop


class Recipe(OwnLoop):
    """A training recipe with its own step.  Subclasses implement ``update`` (one weight update on a minibatch,
    without ``sched.step()``) and, where the loss is CE on a crafted batch, ``make_batch``.

    ``replays``: weight updates per minibatch (Free's m; else 1); ``passes(epochs)``: passes over the data.
    ``early_stop``: an ``EarlyStopping`` or None.  ``last``: the ``Trained`` of the latest ``fit``.
    """

    name = "recipe"
    replays = 1
    batch_fn = False  # True where the loss is CE(model(make_batch(...)), y), so fit can train it

    def __init__(self, early_stop: EarlyStopping | None = None):
        self.early_stop = early_stop
        self.last: Trained | None = None

    # -- the parts ``train`` calls ---------------------------------------------------------------------------
    def passes(self, epochs: int) -> int:
        return epochs

    def prepare(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and labels to train on (``pseudo-label`` replaces labels); resets per-run state."""
        return x, y

    def make_batch(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise UsageError(f"the {self.name} recipe trains with its own loss, not CE on a crafted batch: train it with "
                         "its .fit(...) or defenses.adversarial_training.train(...)")

    def update(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer) -> torch.Tensor:
        """One weight update as ``fit`` makes it: the crafted batch in eval mode, CE on it in train mode."""
        model.eval()
        xt = self.make_batch(model, x, y).detach()
        model.train()
        loss = F.cross_entropy(model(xt), y)
        return step(opt, loss)

    # -- what callers use ---------------------------------------------------------------------------------------
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``fit``'s batch function, for the recipes whose loss is CE on a crafted batch (else UsageError)."""
        if self.early_stop is not None:
            raise UsageError(f"{self.name} with early_stop=true keeps the best epoch's weights, which fit cannot: "
                             "train it with its .fit(...) or defenses.adversarial_training.train(...)")
        return self.make_batch(model, x, y)

    def fit(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float | None = None,
            batch_size: int | None = None, weight_decay: float = 5e-4, seed: int = 0, quiet: bool = False,
            desc: str = "train", **_ignored) -> nn.Module:
        """``harness.core.training.fit``'s signature (None: fit's SGD defaults, lr 0.1 and batches of 128): train by
        ``train`` and hand back the model (``.last``: cost)."""
        lr, batch_size = 0.1 if lr is None else lr, 128 if batch_size is None else batch_size
        self.last = train(model, x, y, self, epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay,
                          seed=seed, quiet=quiet, desc=desc)
        return self.last.model


def step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> torch.Tensor:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


class BatchRecipe(Recipe):
    """Any ``fit`` batch function (``standard``, ``pgd``, ...) as a ``Recipe``, so that ``train`` can early-stop it."""

    batch_fn = True

    def __init__(self, make_batch: BatchFn, early_stop: EarlyStopping | None = None, name: str | None = None):
        super().__init__(early_stop)
        self._make_batch = make_batch
        self.name = name or getattr(make_batch, "registry_name", None) or getattr(make_batch, "__name__", "recipe")

    def make_batch(self, model, x, y):
        return self._make_batch(model, x, y)


def as_recipe(recipe: Recipe | BatchFn) -> Recipe:
    return recipe if isinstance(recipe, Recipe) else BatchRecipe(recipe)


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: Recipe | BatchFn, *, epochs: int,
          lr: float = 0.1, batch_size: int = 128, weight_decay: float = 5e-4, seed: int = 0, quiet: bool = False,
          desc: str = "train", early_stop: EarlyStopping | None = None) -> Trained:
    """Train ``model`` on (x, y) with ``recipe`` (a ``Recipe`` or any ``fit`` batch function) by ``fit``'s
    conventions, counting passes; ``early_stop`` (default: the recipe's own) holds out images and keeps the best
    epoch (``EarlyStopping``).  ``epochs`` are ``fit``'s; Free makes ceil(epochs / m) passes of m replays."""
    if epochs <= 0:
        raise UsageError(f"epochs must be positive, got {epochs}")
    recipe = as_recipe(recipe)
    es = early_stop if early_stop is not None else recipe.early_stop
    device = next(model.parameters()).device
    settings = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "weight_decay": weight_decay, "seed": seed,
                "quiet": True}
    xv = yv = None
    if es is not None:
        tr, va = es.split(len(x), seed)
        xv, yv = x[va].to(device), y[va].to(device)
        x, y = x[tr], y[tr]
    x, y = recipe.prepare(model, x, y, settings)
    counter = PassCounter(model)
    try:
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
        passes, replays = recipe.passes(epochs), recipe.replays
        steps_per_epoch = math.ceil(len(x) / batch_size)
        total = passes * steps_per_epoch * replays
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
        result = Trained(model, n_train=len(x), epochs=passes, updates=total, extra=dict(getattr(recipe, "extra", {})))
        best_robust, best_state = -1.0, None
        bar = tqdm(range(passes), desc=desc, disable=quiet, leave=False)
        for epoch in bar:
            perm = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), batch_size):
                idx = perm[i:i + batch_size]
                xb, yb = x[idx].to(device), y[idx].to(device)
                for _ in range(replays):
                    loss = recipe.update(model, xb, yb, opt)
                    sched.step()
            postfix = {"loss": f"{loss.item():.3f}"}
            if es is not None:
                before = counter.counts
                clean, robust = es.score(model, xv, yv)
                after = counter.counts
                result.eval_forwards += after[0] - before[0]
                result.eval_backwards += after[1] - before[1]
                counter.forwards, counter.backwards = before
                result.history.append((clean, robust))
                if robust > best_robust:
                    best_robust, best_state, result.best_epoch = robust, clone_state(model), epoch + 1
                postfix["val_robust"] = f"{robust:.3f}"
            bar.set_postfix(**postfix)
        result.forwards, result.backwards = counter.counts
        result.forwards += result.extra.get("teacher_forwards", 0)
        result.backwards += result.extra.get("teacher_backwards", 0)
    finally:
        counter.close()
    if es is not None:
        result.last_state = clone_state(model)
        model.load_state_dict(best_state)
    model.eval()
    return result


def clone_state(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def early_stopping_of(early_stop: bool, norm: str, eps: float, val: float) -> EarlyStopping | None:
    return EarlyStopping(norm=norm, eps=eps, val=val) if early_stop else None


# ---------------------------------------------------------------------------------------------------------------
# FGSM adversarial training (Goodfellow et al. 2015)


class FGSMTraining(Recipe):
    """Goodfellow, Shlens & Szegedy, "Explaining and harnessing adversarial examples", ICLR 2015, eq. (section 5)
    J~(theta, x, y) = alpha J(theta, x, y) + (1 - alpha) J(theta, x + eps sign(grad_x J(theta, x, y)), y)
    (the slides' "FGSM adversarial training" objective; the paper's alpha = 0.5).

    The FGSM image is Proj_{[0,1]}(x + eps sign(grad_x CE(model(x), y))), computed in eval mode from the current
    weights (``fit``'s convention for attacks); the loss is the mixture above in train mode.  ``random_init``
    starts the FGSM step from x + U(-eps, eps) and projects onto B_eps(x) (the random initialisation of Wong et
    al. 2020, at step eps); off by default, plain FGSM-AT, which overfits catastrophically (Wong et al. 2020,
    section 4: robust to FGSM, not to PGD)."""

    name = "fgsm"

    def __init__(self, norm: str = "linf", eps: float = 0.1, alpha: float = 0.5, random_init: bool = False,
                 early_stop: EarlyStopping | None = None):
        super().__init__(early_stop)
        self.norm, self.eps, self.alpha, self.random_init = norm, float(eps), float(alpha), bool(random_init)
        self.batch_fn = self.alpha == 0.0

    def adversary(self, model, x, y) -> torch.Tensor:
        return pgd(model, x, y, norm=self.norm, eps=self.eps, steps=1, alpha=self.eps, random_start=self.random_init)

    def make_batch(self, model, x, y):
        if self.alpha != 0.0:
            return super().make_batch(model, x, y)
        return self.adversary(model, x, y)

    def loss(self, model, x, x_adv, y) -> torch.Tensor:
        logits = model(torch.cat([x, x_adv]))
        n = len(x)
        return self.alpha * F.cross_entropy(logits[:n], y) + (1 - self.alpha) * F.cross_entropy(logits[n:], y)

    def update(self, model, x, y, opt):
        if self.alpha == 0.0:  # CE on the FGSM images alone: fit's step
            return super().update(model, x, y, opt)
        model.eval()
        x_adv = self.adversary(model, x, y).detach()
        model.train()
        return step(opt, self.loss(model, x, x_adv, y))


@RECIPES.register("fgsm", "FGSM adversarial training (Goodfellow et al. 2015): alpha CE(x) + (1-alpha) CE(FGSM(x))",
                  paper={"alpha": "0.5", "random_init": "false"})
def fgsm_at(norm: Literal["linf", "l2"] = "linf", eps: float = 0.1, alpha: float = 0.5, random_init: bool = False,
            early_stop: bool = False, val: float = 0.1) -> FGSMTraining:
    """Goodfellow et al. 2015, section 5: alpha * CE(x) + (1 - alpha) * CE(x + eps sign(grad_x CE(x)))
    (``FGSMTraining``); ``random_init``: FGSM from a uniform random start (off: plain FGSM-AT);
    ``early_stop``/``val``: Rice et al. 2020 (``EarlyStopping``)."""
    check_budget(norm, eps)
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"fgsm: alpha (the weight of the clean loss) must be in [0, 1], got {alpha}")
    return FGSMTraining(norm, eps, alpha, random_init, early_stopping_of(early_stop, norm, eps, val))


# ---------------------------------------------------------------------------------------------------------------
# Fast adversarial training (Wong, Rice & Kolter 2020)


class FastTraining(Recipe):
    """Wong, Rice & Kolter, "Fast is better than free: revisiting adversarial training", ICLR 2020, Algorithm 3
    (the slides' "Fast adversarial training"):
        delta ~ U(-eps, eps);  delta <- Proj_{B_eps(0)}(delta + alpha sign(grad_delta l(x + delta, y)));
        theta <- theta - lr grad_theta l(x + delta, y),  alpha = 1.25 eps,
    with x + delta kept in [0, 1] (their code clamps delta to [0 - x, 1 - x]).  One PGD step from a random start
    (``attacks.pgd.pgd``, steps=1), then CE on it: a ``fit`` batch function.  Their cyclic learning rate and mixed
    precision are not reproduced (``fit``'s cosine schedule)."""

    name = "fast"
    batch_fn = True

    def __init__(self, norm: str = "linf", eps: float = 0.1, alpha: float | None = None,
                 early_stop: EarlyStopping | None = None):
        super().__init__(early_stop)
        self.norm, self.eps = norm, float(eps)
        self.alpha = 1.25 * self.eps if alpha is None else float(alpha)

    def make_batch(self, model, x, y):
        return pgd(model, x, y, norm=self.norm, eps=self.eps, steps=1, alpha=self.alpha, random_start=True)


@RECIPES.register("fast", "Fast adversarial training (Wong, Rice & Kolter 2020): FGSM from a uniform random start, step 1.25 eps",
                  paper={"alpha": "1.25 eps"})
def fast_at(norm: Literal["linf", "l2"] = "linf", eps: float = 0.1, alpha: float | None = None,
            early_stop: bool = False, val: float = 0.1) -> FastTraining:
    """Wong et al. 2020, Algorithm 3: delta ~ U(B_eps), delta <- Proj(delta + alpha sign(grad)), train on x + delta;
    ``alpha`` default 1.25 eps (``FastTraining``)."""
    check_budget(norm, eps)
    check_steps("fast", 1, alpha)
    return FastTraining(norm, eps, alpha, early_stopping_of(early_stop, norm, eps, val))


# ---------------------------------------------------------------------------------------------------------------
# Free adversarial training (Shafahi et al. 2019)


def clip_ball(delta: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """Proj_{B_eps(0)}(delta): clip to [-eps, eps] (Linf) or rescale to norm eps (L2)."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    n = flat_norm(delta, "l2").view(-1, *[1] * (delta.dim() - 1))
    return delta * torch.clamp(eps / (n + 1e-12), max=1.0)


class FreeTraining(Recipe):
    """Shafahi et al., "Adversarial training for free!", NeurIPS 2019, Algorithm 1 (the slides' "Free adversarial
    training"): each minibatch is replayed m times; each replay is one forward and one backward at x + delta that
    give both g_theta = grad_theta l(x + delta, y) and g_delta = grad_delta l(x + delta, y), then
        theta <- theta - lr g_theta (the SGD step),   delta <- clip_eps(delta + alpha sign(g_delta)),  alpha = eps.
    delta starts at 0 and is carried across replays and minibatches (one tensor of the batch size; a smaller last
    minibatch takes its first rows); the input is clamp(x + delta, 0, 1), as in their code.  Everything runs in
    train mode (one pass serves both).  ``epochs`` are divided by m (ceil(epochs / m) passes), as in the paper, so
    the weight updates and the passes match those of ``epochs`` of standard training."""

    name = "free"

    def __init__(self, norm: str = "linf", eps: float = 0.1, m: int = 4, alpha: float | None = None,
                 early_stop: EarlyStopping | None = None):
        super().__init__(early_stop)
        self.norm, self.eps, self.m = norm, float(eps), int(m)
        self.alpha = self.eps if alpha is None else float(alpha)
        self.replays = self.m
        self.delta: torch.Tensor | None = None

    def passes(self, epochs: int) -> int:
        return math.ceil(epochs / self.m)

    def prepare(self, model, x, y, settings):
        self.delta, self._batch_size = None, int(settings["batch_size"])
        return x, y

    def update(self, model, x, y, opt):
        n = len(x)
        if self.delta is None or len(self.delta) < n:  # zeros of the batch size, made on the first minibatch
            self.delta = torch.zeros(max(n, getattr(self, "_batch_size", n)), *x.shape[1:], device=x.device,
                                     dtype=x.dtype)
        model.train()
        delta = self.delta[:n].clone().requires_grad_(True)
        loss = F.cross_entropy(model((x + delta).clamp(0, 1)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # one backward: the weights' gradient and delta's
        with torch.no_grad():
            self.delta[:n] = clip_ball(delta.detach() + self.alpha * ascent_direction(delta.grad, self.norm),
                                       self.norm, self.eps)
        opt.step()
        return loss.detach()


@RECIPES.register("free", "Free adversarial training (Shafahi et al. 2019): m replays per minibatch, one backward for weights and delta",
                  paper={"m": "8 (CIFAR), 4 (ImageNet)", "alpha": "eps"})
def free_at(norm: Literal["linf", "l2"] = "linf", eps: float = 0.1, m: int = 4, alpha: float | None = None,
            early_stop: bool = False, val: float = 0.1) -> FreeTraining:
    """Shafahi et al. 2019, Algorithm 1: m replays of each minibatch, theta and delta updated from one backward,
    delta <- clip_eps(delta + alpha sign(g_delta)) carried across minibatches; epochs divided by m (``FreeTraining``)."""
    check_budget(norm, eps)
    if int(m) != m or m < 1:
        raise UsageError(f"free: m (replays per minibatch) must be an integer >= 1, got {m}")
    check_steps("free", 1, alpha)
    return FreeTraining(norm, eps, int(m), alpha, early_stopping_of(early_stop, norm, eps, val))


# ---------------------------------------------------------------------------------------------------------------
# TRADES (Zhang et al. 2019)


def kl_rows(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row from log-probabilities."""
    return (log_p.exp() * (log_p - log_q)).sum(1)


class TradesTraining(Recipe):
    """Zhang et al., "Theoretically principled trade-off between robustness and accuracy", ICML 2019, eq. (5) and
    Algorithm 1:
        min_theta E[ CE(f(x), y) + beta max_{x' in B_eps(x)} KL(f(x) || f(x')) ],
    f the softmax.  The inner maximisation as in their code: x' = x + 0.001 N(0, I), then ``steps`` steps
    x' <- Proj_{B_eps(x) ∩ [0,1]}(x' + alpha sign(grad_x' KL(f(x) || f(x')))) in eval mode (f(x) fixed); the loss in
    train mode with KL(f(x) || f(x')) averaged over the batch, both sides differentiated.  Paper (CIFAR-10):
    beta = 6, 10 steps of about eps/4 (0.007 at eps 0.031).  L2: normalised-gradient steps."""

    name = "trades"

    def __init__(self, norm: str = "linf", eps: float = 0.1, beta: float = 6.0, steps: int = 10,
                 alpha: float | None = None, early_stop: EarlyStopping | None = None):
        super().__init__(early_stop)
        self.norm, self.eps, self.beta, self.steps = norm, float(eps), float(beta), int(steps)
        self.alpha = self.eps / 4 if alpha is None else float(alpha)

    def adversary(self, model, x, start: torch.Tensor | None = None) -> torch.Tensor:
        """argmax_{x' in B_eps(x)} KL(f(x) || f(x')) by ``steps`` signed-gradient steps from ``start``
        (default x + 0.001 N(0, I))."""
        with torch.no_grad():
            log_p = F.log_softmax(model(x), 1)
        xa = (x + 0.001 * torch.randn_like(x)) if start is None else start.clone()
        for _ in range(self.steps):
            xa = xa.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(kl_rows(log_p, F.log_softmax(model(xa), 1)).sum(), xa)
            with torch.no_grad():
                xa = project(xa + self.alpha * ascent_direction(g, self.norm), x, self.norm, self.eps)
        return xa.detach()

    def loss(self, model, x, x_adv, y) -> torch.Tensor:
        logits = model(x)
        log_q = F.log_softmax(model(x_adv), 1)
        return F.cross_entropy(logits, y) + self.beta * kl_rows(F.log_softmax(logits, 1), log_q).mean()

    def update(self, model, x, y, opt):
        model.eval()
        x_adv = self.adversary(model, x)
        model.train()
        return step(opt, self.loss(model, x, x_adv, y))


@RECIPES.register("trades", "TRADES (Zhang et al. 2019): CE(f(x), y) + beta KL(f(x) || f(x')), x' by PGD on the KL",
                  paper={"beta": "6", "steps": "10", "alpha": "eps/4 (0.007 at 8/255)"})
def trades(norm: Literal["linf", "l2"] = "linf", eps: float = 0.1, beta: float = 6.0, steps: int = 10,
           alpha: float | None = None, early_stop: bool = False, val: float = 0.1) -> TradesTraining:
    """Zhang et al. 2019, eq. (5): CE(f(x), y) + beta * KL(f(x) || f(x')), x' from ``steps`` PGD steps of ``alpha``
    (default eps/4) maximising the KL (``TradesTraining``)."""
    check_budget(norm, eps)
    if not (beta >= 0 and math.isfinite(beta)):
        raise UsageError(f"trades: beta must be >= 0, got {beta}")
    check_steps("trades", steps, alpha)
    return TradesTraining(norm, eps, beta, int(steps), alpha, early_stopping_of(early_stop, norm, eps, val))


# ---------------------------------------------------------------------------------------------------------------
# Adversarial training with pseudo-labeled data (Carmon et al. 2019)


def matched_passes(epochs: int, n_split: int, n: int, batch_size: int) -> int:
    """Passes over ``n`` images that make at least the weight updates of ``epochs`` over ``n_split``."""
    return math.ceil(epochs * math.ceil(n_split / batch_size) / math.ceil(n / batch_size))


def labeled_count(labeled: float, n: int) -> int:
    """``labeled`` <= 1 is a fraction of ``n``, > 1 a count."""
    k = round(labeled * n) if labeled <= 1 else int(labeled)
    if not 1 <= k <= n:
        raise UsageError(f"pseudo-label: labeled={labeled:g} keeps {k} labels of {n} training images; it must keep "
                         f"between 1 and {n}")
    return k


class PseudoLabelTraining(Recipe):
    """Carmon, Raghunathan, Schmidt, Liang & Duchi, "Unlabeled data improves adversarial robustness", NeurIPS 2019,
    Algorithm 1 / Meta-Algorithm (the slides' "Adversarial training with additional unlabeled data"):
        1. learn a standard classifier f_std on the labeled data D;  2. pseudo-label the unlabeled pool,
           y~_i = argmax f_std(x~_i);  3. adversarially train on D ∪ D~ (here PGD, Madry et al. 2018, eq. 2.1).
    The pool is the training split with its labels withheld but for ``labeled`` (a fraction <= 1 or a count, drawn
    by the seed).  ``teacher``: a zoo name (default ``digits_cnn``, standard training; note that it was trained on
    the whole digits split, withheld labels included, so it is an oracle-like teacher there) or ``labeled``: step 1
    as written, a standard model trained here on the labeled part (same epochs, learning rate, batch size, seed; its
    passes count).  ``use_pool=False`` drops the pool (the supervised baseline on the labeled part).  Whatever it
    trains on (the teacher on the labeled part included), it makes the weight updates of ``epochs`` over the whole
    split (``matched_passes``), so that neither arm of the comparison is short of updates.  Their 50/50
    mix of labeled and unlabeled images per batch and TRADES loss are not reproduced: the union is shuffled
    uniformly and trained by PGD.  ``extra`` reports the pseudo-labels' agreement with the withheld labels."""

    name = "pseudo-label"
    batch_fn = False  # it replaces labels, which fit takes from the split

    def __init__(self, norm: str = "linf", eps: float = 0.1, steps: int = 10, alpha: float | None = None,
                 teacher: str = "digits_cnn", labeled: float = 0.1, use_pool: bool = True,
                 early_stop: EarlyStopping | None = None):
        super().__init__(early_stop)
        self.norm, self.eps, self.steps, self.alpha = norm, float(eps), int(steps), alpha
        self.teacher, self.labeled, self.use_pool = teacher, float(labeled), bool(use_pool)
        self.extra: dict = {}

    def split(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(labeled indices, pool indices), sorted."""
        k = labeled_count(self.labeled, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        return perm[:k].sort().values, perm[k:].sort().values

    def passes(self, epochs: int) -> int:
        """As many weight updates as ``epochs`` over the whole split, whatever part of it is trained on."""
        return matched_passes(epochs, self._n_split, self._n_train, self._batch_size)

    def teacher_model(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: dict) -> nn.Module:
        device = next(model.parameters()).device
        if self.teacher == "labeled":
            teacher = copy.deepcopy(model)
            counter = PassCounter(teacher)
            devices = [device.index or 0] if device.type == "cuda" else []
            epochs = matched_passes(settings["epochs"], self._n_split, len(x), settings["batch_size"])
            with torch.random.fork_rng(devices=devices):
                fit(teacher, x, y, lambda m, xb, yb: xb, **{**settings, "epochs": epochs})
            counter.close()
            self.extra["teacher_forwards"] += counter.forwards
            self.extra["teacher_backwards"] += counter.backwards
            return teacher.eval()
        from harness.models.zoo import load_zoo

        return load_zoo(self.teacher, device=device, quiet=True)

    def prepare(self, model, x, y, settings):
        self.extra = {"teacher": self.teacher, "labeled": 0, "pool": 0, "teacher_forwards": 0, "teacher_backwards": 0}
        lab, pool = self.split(len(x), settings["seed"])
        self.extra["labeled"] = len(lab)
        self._n_split, self._batch_size = len(x), int(settings["batch_size"])
        if not self.use_pool or len(pool) == 0:
            self._n_train = len(lab)
            return x[lab], y[lab]
        self._n_train = len(x)
        teacher = self.teacher_model(model, x[lab], y[lab], settings)
        device = next(teacher.parameters()).device
        labels = []
        with torch.no_grad():
            for i in range(0, len(pool), 500):
                xb = x[pool[i:i + 500]].to(device)
                try:
                    labels.append(teacher(xb).argmax(1).to(y.device))
                except RuntimeError as err:
                    raise UsageError(f"pseudo-label: teacher {self.teacher!r} does not fit these images "
                                     f"({str(err).splitlines()[0]})") from None
        pseudo = torch.cat(labels)
        self.extra["teacher_forwards"] += len(pool)
        self.extra["pool"] = len(pool)
        self.extra["pseudo_label_accuracy"] = (pseudo == y[pool]).float().mean().item()
        y_train = y.clone()
        y_train[pool] = pseudo
        return x, y_train

    def make_batch(self, model, x, y):
        return pgd(model, x, y, norm=self.norm, eps=self.eps, steps=self.steps, alpha=self.alpha)

    def __call__(self, model, x, y):
        raise UsageError("the pseudo-label recipe replaces the labels of the pool, which fit takes from the split: "
                         "train it with its .fit(...) or defenses.adversarial_training.train(...)")


@RECIPES.register("pseudo-label", "adversarial training with pseudo-labeled data (Carmon et al. 2019): PGD on labeled + teacher-labeled pool",
                  paper={"teacher": "a standard model trained on the labeled data", "steps": "10"})
def pseudo_label(norm: Literal["linf", "l2"] = "linf", eps: float = 0.1, steps: int = 10, alpha: float | None = None,
                 teacher: str = "digits_cnn", labeled: float = 0.1, use_pool: bool = True, early_stop: bool = False,
                 val: float = 0.1) -> PseudoLabelTraining:
    """Carmon et al. 2019, Algorithm 1: ``teacher`` (a zoo name, or ``labeled``: a standard model trained on the
    labeled part) labels the pool (the split but ``labeled``, a fraction <= 1 or a count), then PGD-``steps``
    adversarial training on both (``PseudoLabelTraining``)."""
    check_budget(norm, eps)
    check_steps("pseudo-label", steps, alpha)
    if not (labeled > 0 and math.isfinite(labeled)) or (labeled > 1 and int(labeled) != labeled):
        raise UsageError(f"pseudo-label: labeled must be a fraction in (0, 1] or a whole count, got {labeled}")
    if not teacher:
        raise UsageError("pseudo-label: teacher must name a zoo model or be 'labeled'")
    return PseudoLabelTraining(norm, eps, int(steps), alpha, teacher, labeled, use_pool,
                               early_stopping_of(early_stop, norm, eps, val))


def with_early_stopping(make_batch: BatchFn, norm: str = "linf", eps: float = 0.1, val: float = 0.1,
                        steps: int = 10) -> Recipe:
    """Any ``fit`` batch function (``RECIPES.create("pgd", ...)``) with early stopping (``EarlyStopping``): a
    ``Recipe`` whose ``fit`` keeps the best held-out epoch."""
    return BatchRecipe(make_batch, EarlyStopping(norm=norm, eps=eps, steps=steps, val=val))


__all__ = ["EarlyStopping", "FGSMTraining", "FastTraining", "FreeTraining", "PassCounter", "PseudoLabelTraining",
           "Recipe", "TradesTraining", "Trained", "as_recipe", "train", "with_early_stopping"]
