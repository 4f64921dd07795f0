"""The one training loop (``train_epochs``), the classifier trainer on it (``fit``) and the budget warm-up of
adversarial training (``eps_ramp``).

``train_epochs`` is the loop every trainer of the project runs (classifiers, purifiers, MagNet's autoencoder, the
OOD detector's model): per epoch a seeded permutation of the samples, per batch a step that returns the loss, then
zero_grad / backward / optimizer step / scheduler step, the epoch's mean of each loss term logged, a tqdm bar, and a
checkpoint after every epoch when it runs inside a training session (``harness.core.resume``: a killed training
resumes at its last epoch, to the same weights).  A trainer brings its optimizer, schedule, step and what else the
checkpoint must keep (its models, an eps ramp).  A recipe (registered in ``RECIPES``: ``defenses.recipes``,
``defenses.preempt``, ``defenses.smoothing``, ``defenses.safe_spot``) turns a clean batch into the batch the model
is trained on; ``fit`` trains a classifier on it (SGD with momentum, cosine schedule).  Imports nothing of the
project.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Callable

import torch
import torch.nn.functional as F

from . import progress
from .resume import Counter, Epochs, Stateful

BatchFn = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
# One training step on the samples ``idx``: (the loss to minimise, named terms to log; {} logs the loss alone).
Step = Callable[[torch.Tensor], "tuple[torch.Tensor, dict[str, torch.Tensor]]"]


def train_epochs(n: int, step: Step, opt: torch.optim.Optimizer, sched, *, epochs: int, batch_size: int,
                 gen: torch.Generator, keep: Mapping[str, object], desc: str = "train",
                 log: list | None = None, every: int = 1) -> None:
    """Run ``epochs`` passes over ``n`` samples in batches of ``batch_size`` (order: ``torch.randperm(n, generator=gen)``
    per epoch): ``loss, terms = step(idx)``, then zero_grad, backward, ``opt.step()``, ``sched.step()``.

    ``log`` receives per epoch the mean over samples of "loss" and of each term.  A non-finite mean raises
    FloatingPointError (a model trained on NaN losses is worse than no model).  ``keep``: what the step changes
    besides the optimizer, schedule and ``gen`` (the models, at least), checkpointed with them every ``every``
    epochs inside a training session (``resume.Epochs``); the bar starts at the epoch resumed from."""
    run = Epochs(epochs, {**keep, "optimizer": opt, "scheduler": sched, "generator": gen}, log=log, every=every)
    bar = progress.bar(epochs, desc, initial=run.start)
    for _ in run:
        perm = torch.randperm(n, generator=gen)
        sums: dict[str, torch.Tensor] = {}
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            loss, terms = step(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            for k, v in {"loss": loss, **terms}.items():  # summed on the device: no sync per batch
                sums[k] = sums.get(k, 0.0) + v.detach().double() * len(idx)
        means = {k: float(v) / n for k, v in sums.items()}
        if not all(math.isfinite(v) for v in means.values()):
            raise FloatingPointError(f"{desc}: a loss term became non-finite: {means}")
        if log is not None:
            log.append(means)
        bar.update()
        bar.set_postfix(loss=f"{means['loss']:.4f}")
    bar.close()


class OwnLoop:
    """A recipe whose loss is not CE on a crafted batch (FGSM-AT's mixed loss, Free, TRADES, early stopping,
    CROWN-IBP): it trains the model itself, with ``fit``'s signature, and ``fit`` hands the run to it."""

    def fit(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float | None = None,
            batch_size: int | None = None, weight_decay: float = 5e-4, seed: int = 0,
            desc: str = "train") -> torch.nn.Module:
        """Train ``model`` in place and return it in eval mode; ``lr`` / ``batch_size`` None: the recipe's own."""
        raise NotImplementedError


def fit(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, make_batch: BatchFn, *, epochs: int,
        lr: float | None = None, batch_size: int | None = None, weight_decay: float = 5e-4, seed: int = 0,
        desc: str = "train") -> torch.nn.Module:
    """Minimise CE(model(make_batch(model, xb, yb)), yb) by SGD (momentum 0.9, cosine decay to 0).

    ``make_batch`` runs with the model in eval mode (attacks see fixed batch-norm statistics, as in the
    papers' code); the loss step runs in train mode.  Deterministic for a seed on a given machine.  A recipe that
    is an ``OwnLoop`` trains itself.
    """
    if isinstance(make_batch, OwnLoop):
        return make_batch.fit(model, x, y, epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay,
                              seed=seed, desc=desc)
    lr, batch_size = 0.1 if lr is None else lr, 128 if batch_size is None else batch_size
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(x) / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / (epochs * steps_per_epoch))))

    def step(idx):
        xb, yb = x[idx].to(device), y[idx].to(device)
        model.eval()
        xt = make_batch(model, xb, yb).detach()
        model.train()
        return F.cross_entropy(model(xt), yb), {}

    keep = {"model": model, **({"batches": make_batch} if isinstance(make_batch, Stateful) else {})}
    train_epochs(len(x), step, opt, sched, epochs=epochs, batch_size=batch_size, gen=gen, keep=keep, desc=desc)
    return model.eval()


class EpsRamp(Stateful):
    """The budget of each successive training batch: eps * min(1, (b + 1) / ramp) for batch b = 0, 1, ...

    ``ramp`` = 0 is the constant eps.  A linear warm-up of the budget is the usual remedy when adversarial
    training at a large budget stays at chance from a random initialisation (MNIST at Linf 0.3 with a small CNN:
    Gowal et al. 2018, IBP; Wong et al. 2020, "Fast is better than free", both ramp eps).  Its position (batches
    drawn) is checkpointed with the training (``Stateful``).
    """

    def __init__(self, eps: float, ramp: int):
        self.eps, self.ramp, self.batches = eps, ramp, Counter()

    def __call__(self) -> float:
        return self.eps * min(1.0, next(self.batches) / self.ramp) if self.ramp > 0 else self.eps

    def state_dict(self) -> dict:
        return self.batches.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.batches.load_state_dict(state)


def eps_ramp(eps: float, ramp: int) -> EpsRamp:
    """``EpsRamp(eps, ramp)``: call it once per training batch for that batch's budget."""
    return EpsRamp(eps, ramp)


class StatefulBatch(Stateful):
    """A recipe's batch function whose state a checkpoint keeps (its eps ramp): ``fit`` checkpoints it."""

    def __init__(self, make_batch: BatchFn, state: Stateful):
        self.make_batch, self.state = make_batch, state
        self.__name__ = getattr(make_batch, "__name__", "make_batch")

    def __call__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.make_batch(model, x, y)

    def state_dict(self) -> dict:
        return self.state.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.state.load_state_dict(state)
