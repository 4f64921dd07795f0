"""CIFAR-style ResNets (He et al. 2016, "Deep Residual Learning for Image Recognition").

The layout is the widely copied kuangliu/pytorch-cifar one, as in AutoAttack's example model: a 3x3 stem with
no max-pool, four stages of 64-512 channels, global average pooling (4x4 for 32x32 inputs) and ``linear``.
State-dict keys: conv1, bn1, layer1..layer4 (blocks with conv/bn pairs and an optional ``shortcut``), linear.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from harness.core.registry import MODELS

from .normalize import Normalized


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, 4 * planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * planes)
        self.shortcut = _shortcut(in_planes, 4 * planes, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    """Identity (an empty Sequential, no keys) or a strided 1x1 projection with batch norm."""
    if stride == 1 and in_planes == out_planes:
        return nn.Sequential()
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride, bias=False), nn.BatchNorm2d(out_planes))


class ResNet(Normalized):
    def __init__(self, block, num_blocks, num_classes=10, in_channels=3, mean=(0.0,), std=(1.0,)):
        super().__init__(in_channels, mean, std)
        self.in_planes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(block, 64, num_blocks[0], 1)
        self.layer2 = self._make_layer(block, 128, num_blocks[1], 2)
        self.layer3 = self._make_layer(block, 256, num_blocks[2], 2)
        self.layer4 = self._make_layer(block, 512, num_blocks[3], 2)
        self.linear = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block, planes, num_blocks, stride):
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(self.normalize(x))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)  # = avg_pool2d(out, 4) for 32x32 inputs
        return self.linear(out)


@MODELS.register("resnet18", "ResNet-18, CIFAR layout (3x3 stem, 32x32 inputs; He et al. 2016)")
def resnet18(num_classes: int = 10, in_channels: int = 3, mean: tuple = (0.0,), std: tuple = (1.0,)) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels, mean, std)


@MODELS.register("resnet34", "ResNet-34, CIFAR layout (3x3 stem, 32x32 inputs; He et al. 2016)")
def resnet34(num_classes: int = 10, in_channels: int = 3, mean: tuple = (0.0,), std: tuple = (1.0,)) -> ResNet:
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes, in_channels, mean, std)


@MODELS.register("resnet50", "ResNet-50, CIFAR layout (3x3 stem, bottleneck blocks, 32x32 inputs; He et al. 2016)")
def resnet50(num_classes: int = 10, in_channels: int = 3, mean: tuple = (0.0,), std: tuple = (1.0,)) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels, mean, std)
