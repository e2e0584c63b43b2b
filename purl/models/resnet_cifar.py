"""CIFAR ResNets (ResNet-20/32/56) of He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016).

Layout (Sec. 4.2 of the paper): a 3x3 conv with 16 filters, then 3 stages of ``n = (depth - 2) / 6``
basic blocks with 16, 32 and 64 channels (stride 2 at the start of stages 2 and 3), global average
pooling and a fully connected classifier. Every conv is followed by BatchNorm.

Shortcut choice: the paper's CIFAR models use option A (zero-padded identity). We use **option B**
(a 1x1 conv with stride + BatchNorm when the shape changes, identity otherwise). It costs 2,752
extra parameters (ResNet-20: 272,474 instead of 269,722 with 10 classes) and gives the pruning core
real, prunable 1x1 shortcut convolutions (``layerK.0.shortcut.0``) that it must handle.

Any number of input channels works, and thanks to global average pooling any input of at least
1x1 works too (8x8 digits: 8 -> 8 -> 4 -> 2 spatially). Weights use Kaiming (He et al. 2015) init.
"""

from __future__ import annotations

import torch
from torch import nn

from purl.errors import ConfigError
from purl.models._common import MODELS, InputShape, kaiming_init


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN layers with a residual connection (option-B projection when shapes differ)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """He et al. 2016 CIFAR ResNet of the given depth (6n + 2) with option-B shortcuts."""

    def __init__(self, depth: int, input_shape: InputShape, num_classes: int) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ConfigError(f"CIFAR ResNet depth must be 6n + 2 (8, 14, 20, 32, 56, ...), got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(input_shape[0], 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        in_planes = 16
        stages = []
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, num_classes)
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.avgpool(x)))


@MODELS.register("resnet-20")
def resnet20(input_shape: InputShape, num_classes: int) -> nn.Module:
    """ResNet-20 for CIFAR (He et al. 2016), option-B 1x1 conv shortcuts, 0.27M params."""
    return CifarResNet(20, input_shape, num_classes)


@MODELS.register("resnet-32")
def resnet32(input_shape: InputShape, num_classes: int) -> nn.Module:
    """ResNet-32 for CIFAR (He et al. 2016), option-B 1x1 conv shortcuts, 0.47M params."""
    return CifarResNet(32, input_shape, num_classes)


@MODELS.register("resnet-56")
def resnet56(input_shape: InputShape, num_classes: int) -> nn.Module:
    """ResNet-56 for CIFAR (He et al. 2016), option-B 1x1 conv shortcuts, 0.86M params."""
    return CifarResNet(56, input_shape, num_classes)
