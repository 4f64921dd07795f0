"""Adversarial training with pseudo-labeled data (Carmon et al. 2019)."""
from __future__ import annotations

import copy
import math
from typing import Literal

import torch
from torch import nn

from attacks.pgd import pgd
from harness.core.errors import UsageError
from harness.core.registry import RECIPES
from harness.core.training import fit

from .loop import (
    EarlyStopping,
    PassCounter,
    Recipe,
    check_budget,
    check_steps,
    early_stopping_of,
)

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

        return load_zoo(self.teacher, device=device)

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
