"""The purifier methods (``defenses.purifiers.training``): each method module (``hgd``, ``nrp``, ``jatp``, and
``defenses.magnet``) registers a ``Method`` (its network, crafting, loss, defaults and paper settings) in the core
registry ``PURIFIERS`` (``harness list purifiers``; third parties through the entry point group
``harness.purifiers``).  ``METHODS`` reads that registry as a mapping."""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from harness.core.registry import PURIFIERS


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


def register_method(method: Method, module: str) -> Method:
    """Register ``method`` in the core registry under its name (its factory hands back the method itself);
    ``module``: the module that defines it (``__name__``), the one its entry point names."""

    def factory() -> Method:
        return method

    factory.__module__ = module

    PURIFIERS.register(method.name, f"training method of the {method.name} purifier: network, crafted inputs, "
                                    f"loss (harness train --defense {method.name})")(factory)
    return method


def get_method(name: str) -> Method:
    """The registered method ``name`` (a UsageError with the closest names otherwise)."""
    return PURIFIERS.create(name)


class _Methods(Mapping):
    """The registered methods, name -> ``Method`` (read from ``PURIFIERS``; no table of its own)."""

    def __getitem__(self, name: str) -> Method:
        if name not in PURIFIERS:
            raise KeyError(name)
        return PURIFIERS.create(name)

    def __iter__(self) -> Iterator[str]:
        return iter(PURIFIERS.list())

    def __len__(self) -> int:
        return len(PURIFIERS.list())


METHODS: Mapping[str, Method] = _Methods()


def presets() -> dict[str, dict[str, dict]]:
    """{"digits": {method: settings}, "paper": {method: the paper's CIFAR-10 / ImageNet settings}}."""

    return {"digits": {n: dict(m.defaults) for n, m in METHODS.items()},
            "paper": {n: dict(m.paper) for n, m in METHODS.items()}}
