"""LeNet-300-100 and LeNet-5 (Caffe variant), the classic MNIST pruning benchmarks.

Both come from LeCun et al., "Gradient-based learning applied to document recognition"
(Proc. IEEE 1998); the exact layer sizes are those used by Han et al., "Learning both Weights and
Connections for Efficient Neural Networks" (NeurIPS 2015), i.e. the Caffe ``lenet`` example.
On 1x28x28 MNIST with 10 classes: LeNet-300-100 has 266,610 parameters, LeNet-5 431,080.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from purl.errors import ConfigError
from purl.models._common import MODELS, InputShape, check_int
from purl.models.mlp import MLP


@MODELS.register("lenet-300-100")
def lenet_300_100(input_shape: InputShape, num_classes: int) -> nn.Module:
    """LeNet-300-100 (LeCun et al. 1998; Han et al. 2015): Flatten, fc 300, fc 100, fc num_classes."""
    return MLP(math.prod(input_shape), (300, 100), num_classes)


class LeNet5(nn.Module):
    """Caffe LeNet-5: conv 20@5x5 -> maxpool 2 -> conv 50@5x5 -> maxpool 2 -> fc 500 -> ReLU -> fc.

    As in Caffe's ``lenet_train_test.prototxt`` there is no non-linearity after the convolutions.
    ``padding`` is applied to both convolutions; the flatten size is found by a dry forward pass of
    a zero tensor on CPU at construction, so any input size that survives the two pools works.
    """

    def __init__(self, input_shape: InputShape, num_classes: int, padding: int = 0) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.conv1 = nn.Conv2d(channels, 20, kernel_size=5, padding=padding)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(20, 50, kernel_size=5, padding=padding)
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        try:
            with torch.no_grad():
                flat = self._features(torch.zeros(1, channels, height, width)).shape[1]
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(
                f"lenet-5 cannot handle inputs of shape {tuple(input_shape)} with padding={padding}: "
                f"the feature map shrinks to nothing ({exc}); use a larger input or more padding"
            ) from None
        self.fc1 = nn.Linear(flat, 500)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(500, num_classes)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.flatten(self.pool2(self.conv2(self.pool1(self.conv1(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(self._features(x))))


@MODELS.register("lenet-5")
def lenet_5(input_shape: InputShape, num_classes: int, *, padding: int | None = None) -> nn.Module:
    """LeNet-5, Caffe variant (LeCun et al. 1998; Han et al. 2015): 2 conv + 2 fc, 431k params on MNIST.

    ``padding=None`` (default) picks 0 when height and width are both >= 28 (canonical MNIST layout,
    50*4*4 = 800 features into fc 500) and 2 otherwise, so small inputs such as 8x8 digits keep a
    valid spatial size (8 -> 8 -> 4 -> 4 -> 2, i.e. 50*2*2 = 200 features).
    """
    if padding is None:
        padding = 0 if min(input_shape[1], input_shape[2]) >= 28 else 2
    padding = check_int("lenet-5 option 'padding'", padding, 0)
    return LeNet5(input_shape, num_classes, padding=padding)
