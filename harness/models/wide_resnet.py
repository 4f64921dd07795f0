"""Wide ResNets (Zagoruyko & Komodakis 2016, "Wide Residual Networks").

The layout of TRADES (Zhang et al. 2019) and RobustBench, so their WRN checkpoints load unchanged.
State-dict keys: conv1, block1..block3 (``layer`` of BasicBlock: bn1, conv1, bn2, conv2, optional
convShortcut), bn1, fc.  Depth ``6n + 4``; channels 16, 16k, 32k, 64k for widen factor k.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from harness.core.errors import UsageError
from harness.core.registry import MODELS

from .normalize import Normalized


class BasicBlock(nn.Module):
    """Pre-activation block; when the width changes the shortcut starts from the activated input."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = None if self.equal_in_out else nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False)

    def forward(self, x):
        act = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(act)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        return out + (x if self.equal_in_out else self.convShortcut(act))


class NetworkBlock(nn.Module):
    def __init__(self, num_layers: int, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.layer = nn.Sequential(*[
            BasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate)
            for i in range(num_layers)])

    def forward(self, x):
        return self.layer(x)


class WideResNet(Normalized):
    def __init__(self, depth=34, widen_factor=10, num_classes=10, drop_rate=0.0, in_channels=3,
                 mean=(0.0,), std=(1.0,)):
        super().__init__(in_channels, mean, std)
        if depth < 10 or (depth - 4) % 6:
            raise UsageError(f"wide_resnet depth must be 6n + 4 (10, 16, 22, 28, 34, ...), got {depth}")
        if widen_factor < 1:
            raise UsageError(f"wide_resnet widen_factor must be at least 1, got {widen_factor}")
        n = (depth - 4) // 6
        ch = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, ch[0], 3, 1, 1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU()
        self.fc = nn.Linear(ch[3], num_classes)

    def forward(self, x):
        out = self.conv1(self.normalize(x))
        out = self.block3(self.block2(self.block1(out)))
        out = self.relu(self.bn1(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)  # = avg_pool2d(out, 8) for 32x32 inputs
        return self.fc(out)


@MODELS.register("wide_resnet", "WideResNet-depth-k, TRADES/RobustBench layout (Zagoruyko & Komodakis 2016)")
def wide_resnet(depth: int = 28, widen_factor: int = 10, num_classes: int = 10, drop_rate: float = 0.0,
                in_channels: int = 3, mean: tuple = (0.0,), std: tuple = (1.0,)) -> WideResNet:
    return WideResNet(depth, widen_factor, num_classes, drop_rate, in_channels, mean, std)


@MODELS.register("wrn34_10", "WideResNet-34-10, TRADES/RobustBench layout (Zagoruyko & Komodakis 2016)")
def wrn34_10(num_classes: int = 10, in_channels: int = 3, mean: tuple = (0.0,), std: tuple = (1.0,)) -> WideResNet:
    return WideResNet(34, 10, num_classes, 0.0, in_channels, mean, std)
