"""A small CNN for the embedded digits (8x8) and MNIST-sized (28x28) images."""
from __future__ import annotations

import torch
from torch import nn

from harness.core.registry import MODELS


class SmallCNN(nn.Module):
    """conv32-conv32-pool-conv64-conv64-pool-fc256-fc(classes), ReLU; inputs in [0, 1] (no normalisation).

    The layout of the MNIST CNNs of the adversarial-training literature (Carlini & Wagner 2017; Zhang et al.
    2019), sized by ``image_size`` so that one definition serves 8x8 digits and 28x28 MNIST.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 8, width: int = 32):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, w, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        side = image_size // 4
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(2 * w * side * side, 256), nn.ReLU(),
                                        nn.Linear(256, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@MODELS.register("small_cnn", "small CNN for digits (8x8) and MNIST (28x28); pass image_size")
def small_cnn(num_classes: int = 10, in_channels: int = 1, image_size: int = 8, width: int = 32) -> nn.Module:
    return SmallCNN(num_classes, in_channels, image_size, width)
