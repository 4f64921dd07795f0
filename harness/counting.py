"""The engine's model wrapper that counts forward and backward passes per sample (for timings.csv)."""
from __future__ import annotations

import torch
from torch import nn

from .core.counting import PassCounter
from .core.wrapper import ModelWrapper


class CountingModel(ModelWrapper):
    """``model``, counting the samples through ``forward`` and those whose logits receive a gradient."""

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.counter = PassCounter()

    @property
    def forwards(self) -> int:
        return self.counter.forwards

    @property
    def backwards(self) -> int:
        return self.counter.backwards

    def reset(self) -> tuple[int, int]:
        return self.counter.reset()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        self.counter.record(out)
        return out
