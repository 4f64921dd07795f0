"""The one data type the harness passes around: labelled images in [0, 1], NCHW, float32."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from harness.core.errors import DataError


@dataclass
class ImageSet:
    """Images ``x`` (N, C, H, W) in [0, 1] and integer labels ``y``; normalisation belongs to the model.

    ``default_eps`` maps a norm to the budget used when ``--eps`` is not given; ``default_model`` names the
    zoo model used when ``--model`` is not given; ``note`` says how the split was made (it goes in the tables).
    """

    x: torch.Tensor
    y: torch.Tensor
    classes: tuple[str, ...]
    name: str
    default_eps: dict[str, float] = field(default_factory=lambda: {"linf": 8 / 255, "l2": 0.5})
    default_model: str | None = None
    note: str = ""

    def __post_init__(self):
        if self.x.dim() != 4:
            raise DataError(f"{self.name}: images must be N x C x H x W, got shape {tuple(self.x.shape)}")
        if len(self.x) != len(self.y):
            raise DataError(f"{self.name}: {len(self.x)} images but {len(self.y)} labels")
        self.x = self.x.float().contiguous()
        self.y = self.y.long()
        check_unit_range(self.x, self.name)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, idx: torch.Tensor) -> "ImageSet":
        """The samples at ``idx`` (in that order); a lazily decoded set decodes only those."""
        return ImageSet(self.x[idx], self.y[idx], self.classes, self.name, self.default_eps, self.default_model,
                        self.note)

    def take(self, n: int | None) -> "ImageSet":
        """The first ``n`` samples (a fixed, documented order), or all of them for ``None``."""
        if n is None:
            return self
        if n <= 0 or n > len(self):
            raise DataError(f"--n {n} is out of range: {self.name} has {len(self)} samples")
        return ImageSet(self.x[:n], self.y[:n], self.classes, self.name, self.default_eps, self.default_model, self.note)


def check_unit_range(x: torch.Tensor, what: str) -> None:
    if not torch.isfinite(x).all():
        raise DataError(f"{what}: inputs contain NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise DataError(f"{what}: inputs must lie in [0, 1] (found [{lo:.4g}, {hi:.4g}]); normalisation belongs to the model")
