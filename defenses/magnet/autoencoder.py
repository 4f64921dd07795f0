"""MagNet's autoencoder (``defenses.magnet``): ``MagNetAutoencoder`` (MagNet's ``DenoisingAutoEncoder``), its
structure string, and the digits defaults and the paper's settings of its training."""
from __future__ import annotations

import torch
from torch import nn

from harness.core.errors import UsageError

# digits: about 8 s on one CPU thread.  MagNet's MNIST setting is 100 epochs of 55,000 images (about 21,500
# Adam steps of 256); digits has 1437 training images (6 steps an epoch), so more epochs and a larger step
# (lr 1e-2, divided by 10 after 70% of the epochs).  Structure "3" is MagNet's MNIST autoencoder II: on 8x8 images
# autoencoder I's pooling to 4x4 costs the classifier 3 points of clean accuracy (digits_cnn_adv on the test
# split: 95.6% -> 92.8% with "3,average,3", 95.3% with "3"), and "3" also reforms and detects better.
DEFAULTS = {"structure": "3", "activation": "sigmoid", "noise": 0.1, "optimizer": "adam", "lr": 1e-2,
            "weight_decay": 0.0, "milestones": (0.7,), "gamma": 0.1, "epochs": 400, "batch_size": 256, "seed": 0}

# The official MNIST settings (github.com/Trevillie/MagNet: train_defense.py, test_defense.py).  Documented, not run.
PAPER = {"structure_I": "3,average,3", "structure_II": "3", "activation": "sigmoid", "noise": 0.1, "loss": "mse",
         "optimizer": "adam (keras defaults, lr 1e-3)", "epochs": 100, "batch_size": 256, "reg_strength": 1e-9,
         "detectors": "I: l2 (autoencoder I), II: l1 (autoencoder II); CIFAR-10: jsd T=10, T=40",
         "reformer": "autoencoder I", "drop_rate": 0.001}


def parse_structure(text: str) -> list:
    """``"3,average,3"`` -> [3, "average", 3]."""
    out = []
    for tok in str(text).replace(" ", "").split(","):
        if tok.isdigit() and int(tok) > 0:
            out.append(int(tok))
        elif tok in ("average", "max"):
            out.append(tok)
        else:
            raise UsageError(f"magnet: structure entries are channel counts or average/max, got {tok!r} in {text!r}")
    if not any(isinstance(t, int) for t in out):
        raise UsageError(f"magnet: structure needs at least one convolution, got {text!r}")
    return out


class MagNetAutoencoder(nn.Module):
    """MagNet's ``DenoisingAutoEncoder`` (module docstring): convs/poolings, the mirrored decoder, a sigmoid conv."""

    def __init__(self, in_channels: int = 1, structure: str = DEFAULTS["structure"],
                 activation: str = DEFAULTS["activation"]):
        super().__init__()
        acts = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU}
        if activation not in acts:
            raise UsageError(f"magnet: activation must be sigmoid or relu, got {activation!r}")
        layers, c = [], in_channels
        spec = parse_structure(structure)
        for t in spec:
            if isinstance(t, int):
                layers += [nn.Conv2d(c, t, 3, 1, 1), acts[activation]()]
                c = t
            else:
                layers.append(nn.AvgPool2d(2, ceil_mode=True) if t == "average" else nn.MaxPool2d(2, ceil_mode=True))
        for t in reversed(spec):
            if isinstance(t, int):
                layers += [nn.Conv2d(c, t, 3, 1, 1), acts[activation]()]
                c = t
            else:
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
        layers += [nn.Conv2d(c, in_channels, 3, 1, 1), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if out.shape[-2:] != x.shape[-2:]:  # odd sizes: pooling rounds up, crop back
            out = out[..., : x.shape[-2], : x.shape[-1]]
        return out
