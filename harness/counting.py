"""A model wrapper that counts forward and backward passes per sample (for timings.csv)."""
from __future__ import annotations

import torch
from torch import nn

from .core.wrapper import ModelWrapper


class CountingModel(ModelWrapper):
    """Counts the samples that go through ``forward`` and the samples whose logits receive a gradient."""

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.forwards = 0
        self.backwards = 0

    def reset(self) -> tuple[int, int]:
        counts = (self.forwards, self.backwards)
        self.forwards = self.backwards = 0
        return counts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        n = x.shape[0]
        self.forwards += n
        if out.requires_grad:
            out.register_hook(lambda g: self._count_backward(n))
        return out

    def _count_backward(self, n: int) -> None:
        self.backwards += n
