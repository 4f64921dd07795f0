"""Counting forward and backward passes per sample: the cost unit of timings.csv and of the training table.

One mechanism for both: ``PassCounter.record(logits)`` adds the batch size for a forward pass and, through a
gradient hook on the logits, again for the backward pass that reaches them.  It watches a module through a
forward hook (``PassCounter(model)``; ``close()`` removes it), or an owner calls ``record`` on each output
(``harness.counting.CountingModel``).  Imports nothing of the project.
"""
from __future__ import annotations

import torch
from torch import nn


class PassCounter:
    """Per-sample forward and backward passes through a model (see the module docstring)."""

    def __init__(self, model: nn.Module | None = None):
        self.forwards = 0
        self.backwards = 0
        self._handle = None if model is None else model.register_forward_hook(lambda m, i, out: self.record(out))

    def record(self, out: torch.Tensor) -> None:
        n = out.shape[0]
        self.forwards += n
        if out.requires_grad:
            out.register_hook(lambda g: self._backward(n))

    def _backward(self, n: int) -> None:
        self.backwards += n

    @property
    def counts(self) -> tuple[int, int]:
        return self.forwards, self.backwards

    def reset(self) -> tuple[int, int]:
        """The counts so far, and zero them."""
        counts = self.counts
        self.forwards = self.backwards = 0
        return counts

    def close(self) -> None:
        if self._handle is not None:
            self._handle.remove()
