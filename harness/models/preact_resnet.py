"""Pre-activation ResNet-18 (He et al. 2016, "Identity Mappings in Deep Residual Networks").

The layout of the adversarial-training code of Wong et al. 2020 ("Fast is better than free") and Rice et al.
2020 ("Overfitting in adversarially robust deep learning"), as RobustBench ships it, so their checkpoints load
unchanged.  State-dict keys: conv1, layer1..layer4 (PreActBlock: bn1, conv1, bn2, conv2, optional
shortcut.0), bn, linear.  In that code the 1x1 projection shortcut reads the block's raw input; pass
``preact_shortcut=True`` for the other common variant (RobustBench's PreActBlockV2, kuangliu's CIFAR code),
which projects the activated input ``relu(bn1(x))``.  The keys are the same, the function is not.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from harness.core.registry import MODELS

from .normalize import Normalized


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, preact_shortcut: bool = False):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.preact_shortcut = preact_shortcut
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False))

    def forward(self, x):
        out = F.relu(self.bn1(x))
        if hasattr(self, "shortcut"):
            shortcut = self.shortcut(out if self.preact_shortcut else x)
        else:
            shortcut = x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet(Normalized):
    def __init__(self, num_blocks, num_classes=10, in_channels=3, mean=(0.0,), std=(1.0,), preact_shortcut=False):
        super().__init__(in_channels, mean, std)
        self.in_planes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.layer1 = self._make_layer(64, num_blocks[0], 1, preact_shortcut)
        self.layer2 = self._make_layer(128, num_blocks[1], 2, preact_shortcut)
        self.layer3 = self._make_layer(256, num_blocks[2], 2, preact_shortcut)
        self.layer4 = self._make_layer(512, num_blocks[3], 2, preact_shortcut)
        self.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, num_classes)

    def _make_layer(self, planes, num_blocks, stride, preact_shortcut):
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(PreActBlock(self.in_planes, planes, s, preact_shortcut))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        out = self.conv1(self.normalize(x))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.relu(self.bn(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)  # = avg_pool2d(out, 4) for 32x32 inputs
        return self.linear(out)


@MODELS.register("preact_resnet18", "PreAct ResNet-18, CIFAR layout of Wong et al./Rice et al. (He et al. 2016)")
def preact_resnet18(num_classes: int = 10, in_channels: int = 3, mean: tuple = (0.0,), std: tuple = (1.0,),
                    preact_shortcut: bool = False) -> PreActResNet:
    return PreActResNet([2, 2, 2, 2], num_classes, in_channels, mean, std, preact_shortcut)
