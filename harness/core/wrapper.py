"""A model wrapper that adds bookkeeping (counting passes, timing) and nothing else: ``forward`` is ``model``'s.

Analyses that read a network's layers instead of running it (the bound propagation of ``harness.bounds``) look
through such a wrapper to the model inside.  Imports nothing of the project.
"""
from __future__ import annotations

from torch import nn


class ModelWrapper(nn.Module):
    """Holds ``model``; a subclass's ``forward`` must return ``self.model(x)`` unchanged."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside any bookkeeping wrappers (itself when there is none)."""
    while isinstance(model, ModelWrapper):
        model = model.model
    return model
