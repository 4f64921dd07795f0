"""The adversarial-training family of the lecture "Defenses against adversarial attacks" (not in this repository;
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
seed, desc)`` (``fit``'s signature; what ``harness train`` needs ``fit`` to delegate to) and is callable as
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

from .fgsm import FastTraining, FGSMTraining
from .free import FreeTraining
from .loop import EarlyStopping, PassCounter, Recipe, Trained, as_recipe, train, with_early_stopping
from .pseudo_label import PseudoLabelTraining, labeled_count
from .trades import TradesTraining

__all__ = ["EarlyStopping", "FGSMTraining", "FastTraining", "FreeTraining", "PassCounter", "PseudoLabelTraining",
           "Recipe", "TradesTraining", "Trained", "as_recipe", "labeled_count", "train", "with_early_stopping"]
