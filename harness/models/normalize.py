"""Per-channel input normalisation that lives inside the model.

Datasets hand the harness images in [0, 1]; whatever mean/std a network was trained with belongs to the
network, so that attacks, budgets and clipping all work in [0, 1] pixel space.  ``Normalized`` keeps the
constants as *non-persistent* buffers: they follow ``.to(device)`` but never appear in ``state_dict()``, so
a checkpoint's keys are exactly the architecture's own (an upstream ResNet-18 state dict loads unchanged).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from harness.core.errors import UsageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def channel_stats(values: float | Sequence[float], channels: int, what: str) -> torch.Tensor:
    """``values`` as a (1, C, 1, 1) tensor; a single value is broadcast to all ``channels``."""
    vals = [float(values)] if isinstance(values, (int, float)) else [float(v) for v in values]
    if len(vals) == 1:
        vals = vals * channels
    if len(vals) != channels:
        raise UsageError(f"{what} has {len(vals)} values but the model takes {channels} input channels")
    return torch.tensor(vals, dtype=torch.float32).view(1, channels, 1, 1)


class Normalized(nn.Module):
    """Base class: holds ``mean``/``std`` buffers; subclasses call ``self.normalize(x)`` first in ``forward``."""

    def __init__(self, in_channels: int = 3, mean: Sequence[float] = (0.0,), std: Sequence[float] = (1.0,)):
        super().__init__()
        m, s = channel_stats(mean, in_channels, "mean"), channel_stats(std, in_channels, "std")
        if (s <= 0).any():
            raise UsageError(f"std must be positive, got {tuple(s.flatten().tolist())}")
        self.in_channels = in_channels
        self.register_buffer("mean", m, persistent=False)
        self.register_buffer("std", s, persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map [0, 1] images to the network's input space, ``(x - mean) / std`` per channel."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise UsageError(f"{type(self).__name__} expects N x {self.in_channels} x H x W images, "
                             f"got shape {tuple(x.shape)}")
        return (x - self.mean) / self.std
