"""The table of purifier methods (``defenses.purifiers.training``): each method module (``hgd``, ``nrp``, ``jatp``,
and ``defenses.magnet``) registers a ``Method`` in ``METHODS``: its network, crafting, loss, defaults and paper
settings."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from harness.core.errors import UsageError


@dataclass
class Context:
    """What a method's crafting and loss functions see during training."""

    net: nn.Module            # the purifier P being trained
    target: nn.Module         # the fixed target classifier T (eval mode, no parameter gradients)
    cfg: dict
    feature_net: nn.Module | None = None  # NRP's fixed feature extractor (VGG in the paper)


@dataclass
class Method:
    name: str
    build: Callable[[int, dict], nn.Module]                      # (in_channels, cfg) -> purifier network
    defaults: dict                                               # digits, CPU, about a minute
    paper: dict                                                  # the paper's settings (documented, not run)
    craft: Callable[[Context, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]   # (ctx, x_in, x, y)
    loss: Callable[[Context, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict]]
    pool: Callable[[Context, torch.Tensor, torch.Tensor], tuple] | None = None  # offline inputs (HGD)
    feature_net: bool = False  # trains against a fixed feature network (NRP's VGG role), by default ``standard_model``


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:

    if name not in METHODS:
        raise UsageError(f"unknown purifier {name!r}; one of {', '.join(sorted(METHODS))}")
    return METHODS[name]


def presets() -> dict[str, dict[str, dict]]:
    """{"digits": {method: settings}, "paper": {method: the paper's CIFAR-10 / ImageNet settings}}."""

    return {"digits": {n: dict(m.defaults) for n, m in METHODS.items()},
            "paper": {n: dict(m.paper) for n, m in METHODS.items()}}
