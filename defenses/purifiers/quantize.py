"""Bit-depth reduction (Xu et al. 2018, "feature squeezing"; Guo et al. 2018): a gradient-masking preprocessor.

P(x) = round(x * (2^b - 1)) / (2^b - 1).  ``torch.round`` has a zero gradient almost everywhere, so a
white-box gradient attack through P sees no signal and leaves the image (nearly) where its random start
put it: high "robust" accuracy that is an artefact of obfuscated gradients (Athalye et al. 2018, Sec. 4.1).
BPDA (``attacks.bpda``) replaces P's backward pass by the identity - ``approx(x) = x``, the straight-
through surrogate this defense supplies - and breaks it.  The harness reports both, so the masking shows.
"""
from __future__ import annotations

import torch

from harness.core.capabilities import Approximates
from harness.core.defense import Preprocessor
from harness.core.errors import UsageError
from harness.core.registry import DEFENSES


@DEFENSES.register("quantize", "bit-depth reduction to `bits` bits (gradient-masking preprocessor; break it with bpda)")
class Quantize(Preprocessor, Approximates):
    """bit-depth reduction to `bits` bits (gradient-masking preprocessor; break it with bpda)."""

    def __init__(self, bits: int = 3):
        super().__init__()
        if not 1 <= int(bits) <= 16:
            raise UsageError(f"quantize: bits must be in 1..16, got {bits}")
        self.bits = int(bits)

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        levels = 2 ** self.bits - 1
        return torch.round(x.clamp(0, 1) * levels) / levels

    def approx(self, x: torch.Tensor) -> torch.Tensor:
        """The differentiable surrogate for BPDA: the identity (P(x) ≈ x)."""
        return x

    def describe(self) -> dict:
        return {"bits": self.bits}
