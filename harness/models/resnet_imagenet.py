"""ResNet-50 for 224x224 ImageNet inputs (He et al. 2016, "Deep Residual Learning for Image Recognition").

The torchvision layout ("ResNet v1.5": the stride sits on the 3x3 convolution of each bottleneck), so
torchvision and RobustBench ImageNet state dicts load unchanged.  State-dict keys: conv1, bn1,
layer1..layer4 (Bottleneck: conv1..conv3, bn1..bn3, optional downsample.0/.1), fc.
The ImageNet mean/std are the default and are applied inside the model; inputs stay in [0, 1].
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from harness.core.registry import MODELS

from .normalize import IMAGENET_MEAN, IMAGENET_STD, Normalized


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
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or in_planes != 4 * planes:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, 4 * planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(4 * planes))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNetImageNet(Normalized):
    def __init__(self, layers, num_classes=1000, in_channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__(in_channels, mean, std)
        self.in_planes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(64, layers[0], 1)
        self.layer2 = self._make_layer(128, layers[1], 2)
        self.layer3 = self._make_layer(256, layers[2], 2)
        self.layer4 = self._make_layer(512, layers[3], 2)
        self.fc = nn.Linear(512 * Bottleneck.expansion, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, planes, blocks, stride):
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(Bottleneck(self.in_planes, planes, s))
            self.in_planes = planes * Bottleneck.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        out = self.maxpool(self.relu(self.bn1(self.conv1(self.normalize(x)))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


@MODELS.register("resnet50_imagenet", "ResNet-50, torchvision layout for 224x224 ImageNet (He et al. 2016)")
def resnet50_imagenet(num_classes: int = 1000, in_channels: int = 3, mean: tuple = IMAGENET_MEAN,
                      std: tuple = IMAGENET_STD) -> ResNetImageNet:
    return ResNetImageNet([3, 4, 6, 3], num_classes, in_channels, mean, std)
