"""Defense-GAN's generator G and the WGAN-GP critic (``defenses.defense_gan``), DCGAN-style and small, for 8x8
(digits) and 28x28 (MNIST) images."""
from __future__ import annotations

import torch
from torch import nn

from harness.core.errors import UsageError


def _base(image_size: int) -> int:
    """S/4, the side of G's first feature map (two stride-2 upsamplings; official ``mnist_generator``: 7 for 28)."""
    if image_size % 4 or image_size < 4:
        raise UsageError(f"defense_gan: the generator needs an image size divisible by 4, got {image_size}")
    return image_size // 4


class Generator(nn.Module):
    """G: R^latent_dim -> [0, 1]^(C x S x S), the generator of Defense-GAN (paper Sec. 3.1; official
    ``mnist_generator``): linear to (2w, S/4, S/4), two 4x4 stride-2 transposed convolutions, sigmoid output."""

    def __init__(self, latent_dim: int = 16, channels: int = 1, image_size: int = 8, width: int = 32):
        super().__init__()
        self.latent_dim, self.channels, self.image_size, self.width = int(latent_dim), int(channels), int(image_size), int(width)
        b, w = _base(image_size), self.width
        self.fc = nn.Sequential(nn.Linear(self.latent_dim, 2 * w * b * b), nn.BatchNorm1d(2 * w * b * b), nn.ReLU())
        self.net = nn.Sequential(nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.BatchNorm2d(w), nn.ReLU(),
                                 nn.ConvTranspose2d(w, channels, 4, 2, 1), nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b = self.image_size // 4
        return self.net(self.fc(z).view(-1, 2 * self.width, b, b))


class Critic(nn.Module):
    """The WGAN-GP critic D: [0, 1]^(C x S x S) -> R (Gulrajani et al. 2017, Sec. 4: no batch norm in the critic):
    two 4x4 stride-2 convolutions with leaky ReLU, then linear."""

    def __init__(self, channels: int = 1, image_size: int = 8, width: int = 32):
        super().__init__()
        b, w = _base(image_size), int(width)
        self.net = nn.Sequential(nn.Conv2d(channels, w, 4, 2, 1), nn.LeakyReLU(0.2),
                                 nn.Conv2d(w, 2 * w, 4, 2, 1), nn.LeakyReLU(0.2),
                                 nn.Flatten(), nn.Linear(2 * w * b * b, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()
