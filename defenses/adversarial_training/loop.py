"""The adversarial-training loop: early stopping (Rice et al. 2020), the ``Recipe`` base and
``train`` (``fit``'s conventions, counting passes).  See the package docstring."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from attacks.pgd import pgd
from harness.core import progress
from harness.core.counting import PassCounter
from harness.core.errors import UsageError
from harness.core.geometry import NORMS
from harness.core.resume import Epochs, Stateful
from harness.core.training import BatchFn, OwnLoop

from .trained import Books, Trained

# ---------------------------------------------------------------------------------------------------------------
# Early stopping


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


class Recipe(OwnLoop, Stateful):
    """A training recipe with its own step.  Subclasses implement ``update`` (one weight update on a minibatch,
    without ``sched.step()``) and, where the loss is CE on a crafted batch, ``make_batch``; a recipe that carries
    state from one minibatch to the next (Free's perturbation) hands it to the checkpoint (``Stateful``).

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
            batch_size: int | None = None, weight_decay: float = 5e-4, seed: int = 0, desc: str = "train",
            **_ignored) -> nn.Module:
        """``harness.core.training.fit``'s signature (None: fit's SGD defaults, lr 0.1 and batches of 128): train by
        ``train`` and hand back the model (``.last``: cost)."""
        lr, batch_size = 0.1 if lr is None else lr, 128 if batch_size is None else batch_size
        self.last = train(model, x, y, self, epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay,
                          seed=seed, desc=desc)
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
        self.name = name or getattr(make_batch, "__name__", "recipe")

    def make_batch(self, model, x, y):
        return self._make_batch(model, x, y)

    def state_dict(self) -> dict:  # an eps ramp's position (``StatefulBatch``)
        return self._make_batch.state_dict() if isinstance(self._make_batch, Stateful) else {}

    def load_state_dict(self, state: dict) -> None:
        if isinstance(self._make_batch, Stateful):
            self._make_batch.load_state_dict(state)


def as_recipe(recipe: Recipe | BatchFn) -> Recipe:
    return recipe if isinstance(recipe, Recipe) else BatchRecipe(recipe)


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: Recipe | BatchFn, *, epochs: int,
          lr: float = 0.1, batch_size: int = 128, weight_decay: float = 5e-4, seed: int = 0, desc: str = "train",
          early_stop: EarlyStopping | None = None) -> Trained:
    """Train ``model`` on (x, y) with ``recipe`` (a ``Recipe`` or any ``fit`` batch function) by ``fit``'s
    conventions, counting passes; ``early_stop`` (default: the recipe's own) holds out images and keeps the best
    epoch (``EarlyStopping``).  ``epochs`` are ``fit``'s; Free makes ceil(epochs / m) passes of m replays."""
    if epochs <= 0:
        raise UsageError(f"epochs must be positive, got {epochs}")
    recipe = as_recipe(recipe)
    es = early_stop if early_stop is not None else recipe.early_stop
    device = next(model.parameters()).device
    settings = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "weight_decay": weight_decay, "seed": seed}
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
        books = Books(result, counter)
        run = Epochs(passes, {"model": model, "optimizer": opt, "scheduler": sched, "generator": gen,
                              "recipe": recipe, "books": books})
        bar = progress.bar(passes, desc, initial=run.start)
        for epoch in run:
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
                if robust > books.best_robust:
                    books.best_robust, books.best_state, result.best_epoch = robust, clone_state(model), epoch + 1
                postfix["val_robust"] = f"{robust:.3f}"
            bar.update()
            bar.set_postfix(**postfix)
        bar.close()
        best_state = books.best_state
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


def with_early_stopping(make_batch: BatchFn, norm: str = "linf", eps: float = 0.1, val: float = 0.1,
                        steps: int = 10) -> Recipe:
    """Any ``fit`` batch function (``RECIPES.create("pgd", ...)``) with early stopping (``EarlyStopping``): a
    ``Recipe`` whose ``fit`` keeps the best held-out epoch."""
    return BatchRecipe(make_batch, EarlyStopping(norm=norm, eps=eps, steps=steps, val=val))
