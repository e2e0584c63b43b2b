"""A configurable multi-layer perceptron (Rumelhart, Hinton & Williams 1986), body of LeNet-300-100."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from purl.errors import ConfigError
from purl.models._common import MODELS, InputShape, check_int


class MLP(nn.Sequential):
    """Flatten followed by ``Linear -> ReLU`` per hidden width and a final ``Linear`` to the logits.

    Layers are named ``flatten``, ``fc1``, ``relu1``, ..., ``fcN`` (the last one is the classifier).
    """

    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
        width = in_features
        for i, h in enumerate(hidden, start=1):
            layers[f"fc{i}"] = nn.Linear(width, h)
            layers[f"relu{i}"] = nn.ReLU()
            width = h
        layers[f"fc{len(hidden) + 1}"] = nn.Linear(width, num_classes)
        super().__init__(layers)


@MODELS.register("mlp")
def mlp(input_shape: InputShape, num_classes: int, *, hidden: Sequence[int] = (256, 128)) -> nn.Module:
    """Multi-layer perceptron: Flatten, Linear+ReLU per width in ``hidden`` (default [256, 128]), Linear."""
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
        raise ConfigError(f"mlp option 'hidden' must be a list of positive integers, got {hidden!r}")
    widths = [check_int(f"mlp option 'hidden[{i}]'", h, 1) for i, h in enumerate(hidden)]
    return MLP(math.prod(input_shape), widths, num_classes)
