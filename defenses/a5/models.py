"""The networks of A5 (Frosio & Kautz, CVPR 2023): the classifier C of the paper's MNIST experiments and the
robustifier R of A5/R and A5/RC (sec. 3, eqs. 5 and 7; architectures of the supplementary and the official
``models/mnist.py``).

* ``a5_cnn``: 5 convolutions (w, w, 2w stride 2, 2w, 2w; 3x3, padding 1; w = 64) + FC 512 + FC classes, ReLU,
  no normalisation layer (the official MNIST ``Net``; CROWN-IBP's ``cnn_7layer`` without batch norm).
  ``a5_cnn_small``: the same layout at w = 16, FC 128, the digits-sized version (8x8 images, one CPU core).
* ``Robustifier``: z = R(x), conv(c -> 32, 3x3) - ReLU - conv(32 -> c, 5x5) (the official ``robustifier_mnist``);
  x_r = clip(x + eps_D (2 sigmoid(z) - 1), 0, 1) (eq. 5), applied by ``defenses.a5.objective.perturb``.
  The official R acts on normalised images; ours takes [0, 1] images, the same function class (the first
  convolution absorbs the affine normalisation).
"""
from __future__ import annotations

import torch
from torch import nn

from harness.core.registry import MODELS


class A5CNN(nn.Module):
    """The A5 MNIST classifier (official ``models/mnist.py``), sized by ``image_size`` and ``in_channels``.

    ``features`` + ``classifier`` (``classifier(features(x))``): the layout ``harness.bounds`` reads."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28, width: int = 64,
                 fc: int = 512):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(w, w, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, 1, 1), nn.ReLU(),
        )
        side = (image_size + 1) // 2  # stride-2 3x3 convolution with padding 1
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(2 * w * side * side, fc), nn.ReLU(),
                                        nn.Linear(fc, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@MODELS.register("a5_cnn", "A5 / CROWN-IBP classifier (Frosio & Kautz 2023): 5 convs (64-64-128s2-128-128) + FC 512")
def a5_cnn(num_classes: int = 10, in_channels: int = 1, image_size: int = 28, width: int = 64, fc: int = 512) -> nn.Module:
    return A5CNN(num_classes, in_channels, image_size, width, fc)


@MODELS.register("a5_cnn_small", "A5 classifier at digits scale: 5 convs (16-16-32s2-32-32) + FC 128")
def a5_cnn_small(num_classes: int = 10, in_channels: int = 1, image_size: int = 8, width: int = 16,
                 fc: int = 128) -> nn.Module:
    return A5CNN(num_classes, in_channels, image_size, width, fc)


class Robustifier(nn.Module):
    """R(x) -> z (A5 eq. 7; official ``robustifier_mnist``: conv 3x3 c->hidden, ReLU, conv 5x5 hidden->c), the last
    default PyTorch initialisation as in the official code; ``zero_init`` zeroes the last convolution instead
    (training then starts at dx_D = 0, x_r = x)."""

    def __init__(self, in_channels: int = 1, hidden: int = 32, zero_init: bool = False):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_channels, hidden, 3, 1, 1), nn.ReLU(), nn.Conv2d(hidden, in_channels, 5, 1, 2))
        if zero_init:
            nn.init.zeros_(self.net[2].weight)
            nn.init.zeros_(self.net[2].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
