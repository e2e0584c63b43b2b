"""Shared pieces of the model zoo: the registry, argument checks and weight initialisation."""

from __future__ import annotations

import math

from torch import nn

from purl.errors import ConfigError
from purl.registry import Registry

MODELS: Registry = Registry("model")
"""Name -> builder ``builder(input_shape, num_classes, **kwargs) -> nn.Module``."""

InputShape = tuple[int, int, int]


def check_int(what: str, value: object, minimum: int) -> int:
    """Return ``value`` if it is an int >= ``minimum``; else raise ConfigError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{what} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{what} must be an integer >= {minimum}, got {value}")
    return value


def check_float(what: str, value: object, low: float, high: float) -> float:
    """Return ``value`` as float if ``low <= value < high``; else raise ConfigError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{what} must be a number in [{low}, {high}), got {value!r}")
    if not low <= value < high:
        raise ConfigError(f"{what} must be a number in [{low}, {high}), got {value}")
    return float(value)


def kaiming_init(model: nn.Module) -> None:
    """He et al. 2015 init for convs (fan_out, ReLU), BN weight 1 / bias 0, zero Linear biases."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
