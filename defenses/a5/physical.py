"""A5/P and A5/PC: offline physical robustification (Frosio & Kautz, CVPR 2023, sec. 3 "Offline physical
robustification with (A5/PC) and without (A5/P) retraining C, with ground truth", eqs. 10-11, Table 9).

The physical objects are the 62 character prototypes w of ``harness.data.fonts`` and A is its acquisition model
(random warp, blur, contrast / brightness, noise; ``harness.data.fonts.Acquisition``).  The defender changes the
character shapes by dw_D before they are printed; the MitM attacker adds dx_A, ||dx_A||_inf <= eps_A, to the
*acquired* image, so the bounds are computed on the eps_A box around x = A(w + dw_D):

* eq. 10: x + dx_D = A(w + dw_D), ||dw_D||_inf <= eps_D, with dw_D = eps_D (2 sigmoid(z) - 1) and w + dw_D
  clipped to [0, 1] (eq. 5's parametrisation, official ``zx2x_rob``; one free tensor z per prototype, init 0);
* eq. 11: E(theta_C, dw_D) = (1/N) sum_x E(x + dx_D), the mean over N random acquisitions of the worst-case CE
  (eqs. 2-3, ``objective.worst_case_ce``) of the margin lower bounds at eps_A (``objective.margin_lower``: IBP,
  or CROWN-IBP mixed with IBP by ``mix``, as A5's objective).

A5/P minimises eq. 11 over z with C frozen (the legacy, CROWN-IBP-trained C); A5/PC over z and C's parameters
together, one RMSprop with two parameter groups, starting from a trained C (and, as A5/RC starts from A5/R, from
A5/P's z).  Every step draws fresh acquisitions (N per prototype) from one seeded generator; the official RMSprop
lr is 1e-3; at small scale z gets a larger lr (``lr_z``, default 1e-2: z must travel O(1) in a few hundred
steps), C keeps 1e-3.  The loop is ``harness.core.training.train_epochs`` (one "epoch" = one step over all
prototypes).  The eps_A ramp of certified training is not used: C is already robust at eps_A.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from harness.core.artifacts import TRAIN_THREADS, torch_threads
from harness.core.errors import UsageError
from harness.core.training import train_epochs
from harness.data.fonts import Acquisition, acquisitions, alphabet

from .objective import BOUNDS, certify, margin_lower, perturb, worst_case_ce

CHECKPOINT_EVERY = 10  # steps between checkpoints inside a training session (``harness.core.resume``)

__all__ = ["Acquisition", "acquisitions", "alphabet", "evaluate_physical", "fonts_cnn", "physical_loss",
           "robust_prototypes", "train_physical"]


def fonts_cnn(num_classes: int = 62, width: int = 32, fc: int = 256, image_size: int = 28) -> nn.Sequential:
    """A small classifier for the alphabet in the spirit of the official ``models/fonts.py`` (strided convs + FC +
    FC 62): conv 4x4 s2 (1 -> w) - ReLU - conv 4x4 s2 (w -> 2w) - ReLU - FC (2w (size/4)^2 -> fc) - ReLU - FC.
    Shallow: IBP bounds stay usable at eps_A = 0.1, where the 5-conv ``a5_cnn_small`` collapses to a constant
    under IBP training at 16x16 (RMSprop; checked 2026-12-01)."""
    return nn.Sequential(nn.Conv2d(1, width, 4, 2, 1), nn.ReLU(), nn.Conv2d(width, 2 * width, 4, 2, 1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(2 * width * (image_size // 4) ** 2, fc), nn.ReLU(),
                         nn.Linear(fc, num_classes))


def robust_prototypes(w: torch.Tensor, z: torch.Tensor, delta: float) -> torch.Tensor:
    """w + dw_D(z) clipped to [0, 1], dw_D = eps_D (2 sigmoid(z) - 1) (eqs. 5 and 10): ||. - w||_inf <= eps_D."""
    return perturb(w, z, delta)


def physical_loss(C: nn.Module, w: torch.Tensor, z: torch.Tensor, y: torch.Tensor, eps: float, delta: float,
                  acquisition: Acquisition, gen: torch.Generator, n: int = 8, bound: str = "ibp",
                  mix: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 11 on a batch of prototypes: the mean worst-case CE (eq. 3) over ``n`` random acquisitions
    x = A(w + dw_D) of each (eq. 10), bounds over the Linf eps_A box around x.  Returns the loss and the
    fractions ``err`` (clean) and ``ver_err`` (not certified) of the acquisitions, for the log."""
    x = acquisition(robust_prototypes(w, z, delta).repeat(n, 1, 1, 1), gen)
    yy = y.repeat(n)
    lb = margin_lower(C, x, yy, eps, bound, mix)
    with torch.no_grad():
        err = (C(x).argmax(1) != yy).float().mean()
    return worst_case_ce(lb), {"err": err, "ver_err": (lb < 0).any(1).float().mean().detach()}


def train_physical(C: nn.Module, w: torch.Tensor, eps: float, delta: float, *, steps: int,
                   train_classifier: bool = False, z: torch.Tensor | None = None, n: int = 8, bound: str = "ibp",
                   mix: float = 0.0, lr_z: float = 1e-2, lr_c: float = 1e-3,
                   acquisition: Acquisition | None = None, seed: int = 0,
                   log: Callable[[dict], None] | None = None) -> tuple[torch.Tensor, nn.Module]:
    """A5/P (``train_classifier=False``: z only, C frozen) or A5/PC (z and C jointly), ``steps`` RMSprop steps on
    eq. 11 with all prototypes w (label = index) and ``n`` fresh acquisitions of each per step.  ``z``: where to
    start (default zeros: w itself).  ``log`` gets the per-step means (loss, err, ver_err).  Returns (z, C):
    z detached, C in eval mode (trained in place for A5/PC); the prototypes are ``robust_prototypes(w, z, delta)``."""
    if bound not in BOUNDS:
        raise UsageError(f"bound must be one of {', '.join(BOUNDS)}, got {bound!r}")
    if steps <= 0 or n <= 0 or not (eps > 0 and delta >= 0 and lr_z > 0 and lr_c > 0):
        raise UsageError("train_physical: steps, n, eps, lr_z and lr_c must be positive, delta >= 0")
    acquisition = Acquisition() if acquisition is None else acquisition
    device = next(C.parameters()).device
    w = w.to(device)
    y = torch.arange(len(w), device=device)
    z = (torch.zeros_like(w) if z is None else z.detach().clone().to(device)).requires_grad_(True)
    groups = [{"params": [z], "lr": lr_z}]
    saved = [(p, p.requires_grad) for p in C.parameters()]
    for p in C.parameters():
        p.requires_grad_(train_classifier)
    if train_classifier:
        groups.append({"params": list(C.parameters()), "lr": lr_c})
    opt = torch.optim.RMSprop(groups)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    history: list = []

    def step(_idx):  # one "epoch" of train_epochs = one batch = all prototypes (z is one tensor for all)
        C.train(train_classifier)
        return physical_loss(C, w, z, y, eps, delta, acquisition, gen, n, bound, mix)

    try:
        with torch_threads(TRAIN_THREADS), torch.enable_grad():
            train_epochs(len(w), step, opt, sched, epochs=steps, batch_size=len(w), gen=gen,
                         keep={"z": z, "classifier": C}, every=CHECKPOINT_EVERY,
                         desc="A5/PC" if train_classifier else "A5/P", log=history)
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)
    if log is not None:
        for i, h in enumerate(history):
            log({"step": i + 1, **h})
    return z.detach(), C.eval()


@torch.no_grad()
def evaluate_physical(C: nn.Module, w: torch.Tensor, z: torch.Tensor | None, delta: float, eps: float, k: int,
                      seed: int, methods=("ibp", "crown-ibp"), acquisition: Acquisition | None = None) -> dict:
    """Errors (%) of C on ``k`` test acquisitions of each prototype, A(w + dw_D(z)) (z None: A(w)), with the test
    draws of ``seed`` (the same transforms for every z): clean and certified at eps_A per bound method."""
    wr = w if z is None else robust_prototypes(w, z, delta)
    x, y = acquisitions(wr, k, seed, Acquisition() if acquisition is None else acquisition)
    cert = certify(C, x, y, eps, methods)
    return {m: 100.0 * (1 - float(v.float().mean())) for m, v in cert.items()}
