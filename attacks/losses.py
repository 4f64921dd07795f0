"""Attack losses on logits, summed over the batch so that each sample's gradient is its own.

``ce``: cross-entropy.  ``cw``: the Carlini-Wagner margin max_{j!=y} z_j - z_y (Carlini & Wagner 2017, f_6).
``dlr``: the difference-of-logits ratio of Croce & Hein (2020, eq. 6), scale-invariant.
For a targeted attack each loss is the one that increases as the prediction moves to the target.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("ce", "cw", "dlr")


def _other_max(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return z.masked_fill(F.one_hot(y, z.shape[1]).bool(), float("-inf")).amax(1)


def attack_loss(z: torch.Tensor, y: torch.Tensor, kind: str = "ce", target: torch.Tensor | None = None) -> torch.Tensor:
    """The per-sample loss the attacker ascends, summed over the batch."""
    zy = z.gather(1, y[:, None])[:, 0]
    if target is None:
        if kind == "ce":
            return F.cross_entropy(z, y, reduction="sum")
        if kind == "cw":
            return (_other_max(z, y) - zy).sum()
        srt = z.sort(1).values
        return (-(zy - _other_max(z, y)) / (srt[:, -1] - srt[:, -3] + 1e-12)).sum()
    zt = z.gather(1, target[:, None])[:, 0]
    if kind == "ce":
        return -F.cross_entropy(z, target, reduction="sum")
    if kind == "cw":
        return (zt - _other_max(z, target)).sum()
    srt = z.sort(1).values  # targeted DLR (Croce & Hein 2020, eq. 7)
    return (-(zy - zt) / (srt[:, -1] - 0.5 * (srt[:, -3] + srt[:, -4]) + 1e-12)).sum()
