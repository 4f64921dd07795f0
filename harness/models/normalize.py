"""Per-channel input normalisation that lives inside the model.

Datasets hand the harness images in [0, 1]; whatever mean/std a network was trained with belongs to the
network, so that attacks, budgets and clipping all work in [0, 1] pixel space.  ``Normalized`` keeps the
constants as *non-persistent* buffers: they follow ``.to(device)`` but never appear in ``state_dict()``, so
a checkpoint's keys are exactly the architecture's own (an upstream ResNet-18 state dict loads unchanged).

A network that does not normalise by itself gets an outside normaliser: ``NormalizedModel(net, mean, std)``,
with the stats from ``--normalize mean=...,std=...`` (``parse_normalize``).
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn

from harness.core.errors import UsageError
from harness.core.values import parse_number, split_sequence

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
        if isinstance(in_channels, nn.Module):
            raise TypeError("Normalized is the base class of self-normalising architectures; wrap a network with "
                            "NormalizedModel(module, mean, std)")
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


NORMALIZE_FORMS = ("mean=M,M,M,std=S,S,S (one value per channel, or one for all: mean=0.5,std=0.5), e.g. "
                   "mean=0.4914,0.4822,0.4465,std=0.2471,0.2435,0.2616")


def parse_normalize(text: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``mean=0.4914,0.4822,0.4465,std=0.2471,0.2435,0.2616`` -> ``(mean, std)`` tuples of equal length.

    Either order; values may be fractions (``8/255``) or bracketed (``mean=(0.5,0.5,0.5)``); one value for one
    stat is repeated to the other's length, and ``mean=0.5,std=0.5`` stays one value each (broadcast over any
    number of channels).  A one-line ``UsageError`` that shows the accepted form otherwise.
    """
    parts = re.split(r"(?:^|,)\s*(mean|std)\s*=", str(text).strip())
    if parts[0].strip() or len(parts) != 5 or parts[1] == parts[3]:
        raise UsageError(f"--normalize expects {NORMALIZE_FORMS}; got {text!r}")
    stats = {}
    for key, value in zip(parts[1::2], parts[2::2]):
        try:
            items, _ = split_sequence(value)
            if not items:
                raise ValueError("no values")
            stats[key] = tuple(parse_number(v) for v in items)
        except (ValueError, ZeroDivisionError) as e:
            raise UsageError(f"--normalize {key}={value.strip()!r} is not a list of numbers ({e}); "
                             f"expected {NORMALIZE_FORMS}") from None
    mean, std = stats["mean"], stats["std"]
    if len(mean) != len(std) and 1 not in (len(mean), len(std)):
        raise UsageError(f"--normalize has {len(mean)} mean values but {len(std)} std values; give one per channel "
                         "or one for all")
    if any(not s > 0 for s in std):  # also NaN
        raise UsageError(f"--normalize std must be positive, got {','.join(map(str, std))}")
    n = max(len(mean), len(std))
    return (mean * n if len(mean) == 1 else mean), (std * n if len(std) == 1 else std)


class NormalizedModel(Normalized):
    """``module`` behind an outside normaliser: ``forward(x) = module((x - mean) / std)`` for x in [0, 1].

    For a network trained on normalised inputs whose normalisation is not part of it (most training scripts,
    RobustBench checkpoints): attacks, budgets and clipping then stay in [0, 1] pixel space.  One value per
    stat is broadcast over any number of channels.  The stats are non-persistent buffers, so ``state_dict()``
    holds ``model.<the network's keys>``; ``load_weights`` on this wrapper loads into the network.
    """

    def __init__(self, module: nn.Module, mean: float | Sequence[float], std: float | Sequence[float]):
        mean = (float(mean),) if isinstance(mean, (int, float)) else tuple(float(v) for v in mean)
        std = (float(std),) if isinstance(std, (int, float)) else tuple(float(v) for v in std)
        channels = max(len(mean), len(std))
        if len(mean) not in (1, channels) or len(std) not in (1, channels):
            raise UsageError(f"normaliser has {len(mean)} mean values but {len(std)} std values; give one per "
                             "channel or one for all")
        super().__init__(channels, mean, std)
        self.model = module
        self.train(module.training)  # in the mode of the network it wraps

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or self.in_channels not in (1, x.shape[1]):
            raise UsageError(f"the normaliser expects N x {self.in_channels} x H x W images, "
                             f"got shape {tuple(x.shape)}")
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x))
