"""Wide ResNets (WRN-d-k) of Zagoruyko & Komodakis, "Wide Residual Networks" (BMVC 2016).

Layout: a 3x3 conv with 16 filters, then 3 groups of ``n = (depth - 4) / 6`` pre-activation blocks
(BN-ReLU-conv3x3-BN-ReLU-dropout-conv3x3) with ``16k``, ``32k`` and ``64k`` channels (stride 2 at
the start of groups 2 and 3), a final BN-ReLU, global average pooling and a linear classifier.
When a block changes the shape its shortcut is a 1x1 conv (no BN) applied to the pre-activated
input, as in the authors' code. Parameter counts with 3 input channels and 10 classes:
WRN-28-8 23,354,842 and WRN-28-10 36,479,194.
"""

from __future__ import annotations

import torch
from torch import nn

from purl.errors import ConfigError
from purl.models._common import MODELS, InputShape, check_float, check_int, kaiming_init


class WideBasicBlock(nn.Module):
    """Pre-activation wide basic block with optional dropout between its two 3x3 convolutions."""

    def __init__(self, in_planes: int, planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.dropout = nn.Dropout(p=dropout)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu1(self.bn1(x))
        out = self.conv1(act)
        out = self.conv2(self.dropout(self.relu2(self.bn2(out))))
        residual = x if self.shortcut is None else self.shortcut(act)
        return out + residual


class WideResNet(nn.Module):
    """WRN-depth-width (Zagoruyko & Komodakis 2016); depth must be 6n + 4."""

    def __init__(
        self, depth: int, width: int, input_shape: InputShape, num_classes: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ConfigError(f"wrn option 'depth' must be 6n + 4 (10, 16, 22, 28, 40, ...), got {depth}")
        n = (depth - 4) // 6
        widths = (16 * width, 32 * width, 64 * width)
        self.conv1 = nn.Conv2d(input_shape[0], 16, kernel_size=3, stride=1, padding=1, bias=False)
        in_planes = 16
        groups = []
        for planes, stride in zip(widths, (1, 2, 2), strict=True):
            blocks = []
            for i in range(n):
                blocks.append(WideBasicBlock(in_planes, planes, stride if i == 0 else 1, dropout))
                in_planes = planes
            groups.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = groups
        self.bn = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_planes, num_classes)
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return self.fc(self.flatten(self.avgpool(self.relu(self.bn(x)))))


@MODELS.register("wrn")
def wrn(
    input_shape: InputShape, num_classes: int, *, depth: int = 28, width: int = 10, dropout: float = 0.0
) -> nn.Module:
    """Wide ResNet WRN-depth-width (Zagoruyko & Komodakis 2016); options depth=28, width=10, dropout=0."""
    depth = check_int("wrn option 'depth'", depth, 10)
    width = check_int("wrn option 'width'", width, 1)
    dropout = check_float("wrn option 'dropout'", dropout, 0.0, 1.0)
    return WideResNet(depth, width, input_shape, num_classes, dropout)


@MODELS.register("wrn-28-8")
def wrn_28_8(input_shape: InputShape, num_classes: int, *, dropout: float = 0.0) -> nn.Module:
    """WRN-28-8 (Zagoruyko & Komodakis 2016), 23.4M params; option dropout=0."""
    return wrn(input_shape, num_classes, depth=28, width=8, dropout=dropout)


@MODELS.register("wrn-28-10")
def wrn_28_10(input_shape: InputShape, num_classes: int, *, dropout: float = 0.0) -> nn.Module:
    """WRN-28-10 (Zagoruyko & Komodakis 2016), 36.5M params; option dropout=0."""
    return wrn(input_shape, num_classes, depth=28, width=10, dropout=dropout)
