"""Training in A5 (Frosio & Kautz, CVPR 2023): CROWN-IBP certified training of C, the robustifier R of A5/R
(eq. 7, C frozen) and the co-training of R and C of A5/RC (eqs. 8-9), all by the one loop of the official
``a5.py`` (``train_a5``).

The loop (official ``main``, "Train"): RMSprop over the trained parameters (lr 1e-3), batches of 100, MultiStepLR
(milestones 25, 42, gamma 0.1, stepped per epoch), the eps ramp of auto_LiRPA's ``SmoothedScheduler``
(``start=3,length=18,mid=0.3``; ``objective.smoothed_eps``) and the factor ``f = (eps - eps_t) / eps`` that both
weighs the natural loss (CROWN-IBP's kappa, Zhang et al. 2020 eq. 7) and mixes the CROWN-IBP bound with IBP
(``objective.a5_loss``): kappa and the CROWN-IBP beta both fall from 1 to 0 over the ramp and are 0 after it.
``eps = 0`` trains on the natural loss alone (the paper's unprotected ``eps_A^C = 0`` classifier).

Conventions of ``harness.core.training.fit``: checkpointed after every epoch inside a training session
(``harness.core.resume``; the eps ramp's position is the batch count, epoch x batches per epoch), seeded (``torch.manual_seed(seed)`` and a seeded generator for the
shuffling), one CPU thread (``torch_threads(TRAIN_THREADS)``, so cached weights do not depend on who trained
them), the model handed back in eval mode.  ``fit`` itself cannot train CROWN-IBP (its loss is CE on a batch), so
the recipe ``crown-ibp`` returns a trainer with its own ``fit`` (``CrownIBPTrainer``).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from harness.core.artifacts import TRAIN_THREADS, torch_threads
from harness.core.errors import UsageError
from harness.core.progress import bar
from harness.core.registry import RECIPES
from harness.core.resume import Epochs
from harness.core.training import OwnLoop

from .models import Robustifier
from .objective import BOUNDS, a5_loss, mix_factor, per_epoch, perturb, smoothed_eps

# The official a5.py defaults (``parse_argumments``).
PAPER = {"lr": 1e-3, "batch_size": 100, "epochs": 100, "start": 3, "length": 18, "mid": 0.3, "milestones": (25, 42),
         "gamma": 0.1, "bound": "crown-ibp"}


def as_xy(data) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of an ``ImageSet`` or of a pair."""
    return (data.x, data.y) if hasattr(data, "x") else (data[0], data[1])


def random_shift(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``pad`` and crop back at a random offset per image: the random-crop part of the official
    ``--x-augmentation-mnist`` (RandomCrop(28, 4); its RandomRotation(10) is not reproduced), used for A5/RC
    (Table 5, "data augmentation").  The official transform draws one offset per batch; we draw one per image."""
    if pad <= 0:
        return x
    n, _, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device)
    rows = torch.arange(h, device=x.device)[None] + dy[:, None]
    cols = torch.arange(w, device=x.device)[None] + dx[:, None]
    b = torch.arange(n, device=x.device)[:, None, None]
    return xp.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def train_a5(classifier: nn.Module, data, eps: float, *, epochs: int, robustifier: nn.Module | None = None,
             delta: float = 0.0, train_classifier: bool = True, train_robustifier: bool = False,
             bound: str = "crown-ibp", lr: float = 1e-3, batch_size: int = 100, start: int = 3, length: int = 18,
             mid: float = 0.3, milestones: Sequence[int] = (25, 42), gamma: float = 0.1, augment_pad: int = 0,
             seed: int = 0, desc: str = "a5", log: Callable[[dict], None] | None = None) -> nn.Module:
    """The official ``a5.py`` training loop (module docstring): minimise ``f CE(C(x_r), y) + (1 - f) E(x_r)`` with
    x_r = x + dx_D(R(x)) (eq. 5; x_r = x without a robustifier), E the worst-case CE at the scheduled eps (eq. 3),
    over C's parameters (``train_classifier``: CROWN-IBP training; eqs. 8-9 with R), R's (``train_robustifier``:
    eq. 7) or both (A5/RC, eq. 9).  ``log`` gets per-epoch means (loss, err, ver_err, eps, f).  Returns C in eval
    mode (R, if any, is trained in place and left in eval mode)."""
    if bound not in BOUNDS:
        raise UsageError(f"bound must be one of {', '.join(BOUNDS)}, got {bound!r}")
    if epochs <= 0 or not lr > 0 or batch_size <= 0 or eps < 0:
        raise UsageError("train_a5: epochs, lr and batch_size must be positive and eps >= 0")
    x, y = as_xy(data)
    device = next(classifier.parameters()).device
    nets = [(classifier, train_classifier)] + ([(robustifier, train_robustifier)] if robustifier is not None else [])
    params = [p for net, trained in nets if trained for p in net.parameters()]
    if not params:
        raise UsageError("train_a5: nothing to train")
    saved = [(p, p.requires_grad) for net, _ in nets for p in net.parameters()]
    for net, trained in nets:
        for p in net.parameters():
            p.requires_grad_(trained)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.RMSprop(params, lr=lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[int(m) for m in milestones], gamma=gamma)
    n_batches = per_epoch(len(x), batch_size)
    history: list[dict] = []  # the per-epoch log, kept with the checkpoint so that a resumed run logs every epoch
    keep = {**{f"net{i}": net for i, (net, _) in enumerate(nets)}, "optimizer": opt, "scheduler": sched,
            "generator": gen}
    run = Epochs(epochs, keep, log=history)
    if log is not None:
        for record in history:
            log(record)
    epochs_bar = bar(epochs, desc, initial=run.start)
    try:
        with torch_threads(TRAIN_THREADS), torch.enable_grad():
            for epoch in run:
                for net, _ in nets:  # no dropout / batch norm in the A5 networks: the mode only matters for others
                    net.train()
                perm = torch.randperm(len(x), generator=gen)
                sums: dict[str, float] = {}
                step = epoch * n_batches  # the eps schedule's position: batches trained so far
                for i in range(0, len(x), batch_size):
                    idx = perm[i:i + batch_size]
                    xb, yb = random_shift(x[idx], augment_pad, gen).to(device), y[idx].to(device)
                    eps_t = smoothed_eps(step, eps, n_batches, start, length, mid)
                    f = mix_factor(eps_t, eps)
                    xr = perturb(xb, robustifier(xb), delta) if robustifier is not None else xb
                    loss, stats = a5_loss(classifier, xr, yb, eps_t, f, bound)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    step += 1
                    for k, v in {"loss": float(loss.detach()), "eps": eps_t, "f": f, **stats}.items():
                        sums[k] = sums.get(k, 0.0) + v
                sched.step()
                history.append({"epoch": epoch + 1, **{k: v / n_batches for k, v in sums.items()}})
                if log is not None:
                    log(history[-1])
                epochs_bar.update()
                epochs_bar.set_postfix(loss=f"{sums['loss'] / n_batches:.3f}", eps=f"{eps_t:.3f}")
    finally:
        epochs_bar.close()
        for p, flag in saved:
            p.requires_grad_(flag)
    if robustifier is not None:
        robustifier.eval()
    return classifier.eval()


def train_crown_ibp(model: nn.Module, data, eps: float, epochs: int = PAPER["epochs"], **settings) -> nn.Module:
    """CROWN-IBP certified training of ``model`` at Linf ``eps`` (Zhang et al. 2020; the official ``a5.py
    --train-classifier``, used for A5's legacy classifiers, Table 2): ``train_a5`` with C's parameters only.
    ``settings``: those of ``train_a5`` (bound, lr, batch_size, start, length, mid, milestones, gamma, seed, ...)."""
    return train_a5(model, data, eps, epochs=epochs, train_classifier=True, **settings)


def train_robustifier(classifier: nn.Module, data, eps: float, delta: float, epochs: int, *,
                      robustifier: nn.Module | None = None, **settings) -> nn.Module:
    """A5/R (eq. 7): train R so that every x + dx_D(R(x)) of the training set is eps-robust for the frozen C
    (official ``--train-robustifier --load-classifier``).  Returns R in eval mode."""
    x, _ = as_xy(data)
    R = robustifier if robustifier is not None else Robustifier(x.shape[1])
    R.to(next(classifier.parameters()).device)
    train_a5(classifier, data, eps, epochs=epochs, robustifier=R, delta=delta, train_classifier=False,
             train_robustifier=True, **settings)
    return R


def co_train(classifier: nn.Module, robustifier: nn.Module, data, eps: float, delta: float, epochs: int,
             **settings) -> tuple[nn.Module, nn.Module]:
    """A5/RC (eqs. 8-9): fine-tune R (trained first by A5/R, sec. 3 "we first train R ... and then fine tune R and C
    together") and C jointly on the worst-case CE of x + dx_D(R(x)), with random-shift augmentation
    (``augment_pad``, Table 5).  Trains both in place; returns (C, R) in eval mode."""
    train_a5(classifier, data, eps, epochs=epochs, robustifier=robustifier, delta=delta, train_classifier=True,
             train_robustifier=True, **settings)
    return classifier, robustifier


class CrownIBPTrainer(OwnLoop):
    """What the ``crown-ibp`` recipe returns: ``fit(model, x, y, epochs=...)`` trains by ``train_crown_ibp``.

    Not a batch function: its loss is not CE on a crafted batch, so it is an ``OwnLoop`` and
    ``harness.core.training.fit`` (``harness train --recipe crown-ibp``) hands it the run."""

    def __init__(self, **settings):
        self.settings = settings

    def __call__(self, model, x, y):
        raise UsageError("the crown-ibp recipe trains with its own loss (CROWN-IBP bounds): call its .fit(...)")

    def fit(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float | None = None,
            batch_size: int | None = None, seed: int = 0, desc: str = "train (crown-ibp)", **_ignored) -> nn.Module:
        """``fit``'s signature; ``lr`` / ``batch_size`` None keep the recipe's (official 1e-3 / 100)."""
        kw = dict(self.settings)
        if lr is not None:
            kw["lr"] = lr
        if batch_size is not None:
            kw["batch_size"] = batch_size
        eps = kw.pop("eps")
        return train_crown_ibp(model, (x, y), eps, epochs, seed=seed, desc=desc, **kw)


@RECIPES.register("crown-ibp", "CROWN-IBP certified training (Zhang et al. 2020; A5's legacy C), its own loop",
                  paper={"lr": "1e-3 (RMSprop)", "batch_size": "100", "epochs": "100",
                         "start": "3", "length": "18", "mid": "0.3", "milestones": "25,42"})
def crown_ibp(eps: float = 0.1, bound: Literal["crown-ibp", "ibp", "crown"] = "crown-ibp", lr: float = 1e-3,
              batch_size: int = 100, start: int = 3, length: int = 18, mid: float = 0.3,
              milestones: tuple = (25, 42), gamma: float = 0.1) -> CrownIBPTrainer:
    """CROWN-IBP training at Linf ``eps`` (``train_crown_ibp``): eps ramp ``start``/``length``/``mid`` in epochs
    (SmoothedScheduler), RMSprop ``lr``, MultiStepLR ``milestones``/``gamma``; ``bound``: the training bound."""
    if bound not in BOUNDS:
        raise UsageError(f"crown-ibp: bound must be one of {', '.join(BOUNDS)}, got {bound!r}")
    return CrownIBPTrainer(eps=float(eps), bound=bound, lr=float(lr), batch_size=int(batch_size), start=int(start),
                           length=int(length), mid=float(mid), milestones=tuple(int(m) for m in milestones),
                           gamma=float(gamma))
