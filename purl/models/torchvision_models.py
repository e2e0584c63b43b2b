"""Any torchvision classification model, by name (``torchvision:resnet50`` or just ``resnet50``).

Models are built with ``torchvision.models.get_model(name, weights=None, num_classes=num_classes)``
(see each architecture's paper in the torchvision docs). Extra options are passed to torchvision.

Pretrained weights: ``weights="DEFAULT"`` (or a name such as ``"IMAGENET1K_V1"``) is passed to
torchvision, which loads the file from its cache (``$TORCH_HOME/hub/checkpoints``, default
``~/.cache/torch/hub/checkpoints``) and otherwise tries to download it. Without internet access the
file must already be cached there. With weights, the model is built with its pretrained head and the
last ``nn.Linear`` is then replaced by a freshly initialised one with ``num_classes`` outputs when
the class count differs (models without a linear head, e.g. SqueezeNet, are refused).

Input channels: when ``C != 3`` the first ``nn.Conv2d`` is replaced by one taking ``C`` channels
with otherwise identical settings. Its weights are copied cyclically from the original RGB filters
(random init: keeps torchvision's init distribution); with pretrained weights the RGB filters are
instead summed for C = 1, or tiled and scaled by 3 / C otherwise (the usual timm recipe), so the
first-layer response to a grey image is preserved.
"""

from __future__ import annotations

import functools
import pickle

import torch
import torchvision
from torch import nn

from purl.errors import ConfigError, RegistryError
from purl.models._common import InputShape

PREFIX = "torchvision:"


@functools.lru_cache(maxsize=1)
def torchvision_names() -> tuple[str, ...]:
    """Names of torchvision's image classification models (not detection/segmentation/video)."""
    return tuple(torchvision.models.list_models(module=torchvision.models))


def resolve_torchvision_name(name: str, *, explicit: bool) -> str | None:
    """Torchvision model name for ``name``; if unknown ``None``, or RegistryError when ``explicit``."""
    key = name.lower()
    if key in torchvision_names():
        return key
    if explicit:
        raise RegistryError(f"unknown torchvision model '{name}'; allowed: {', '.join(torchvision_names())}")
    return None


def build_torchvision(
    name: str, input_shape: InputShape, num_classes: int, *, weights: object = None, **kwargs: object
) -> nn.Module:
    """Build torchvision classification model ``name`` for ``input_shape`` and ``num_classes``."""
    tv_name = resolve_torchvision_name(name, explicit=True)
    assert tv_name is not None
    pretrained = weights is not None
    if not pretrained:
        kwargs["num_classes"] = num_classes
    try:
        model = torchvision.models.get_model(tv_name, weights=weights, **kwargs)
    except (TypeError, ValueError, KeyError) as exc:
        options = ", ".join(repr(k) for k in kwargs if k != "num_classes") or "none"
        raise ConfigError(
            f"torchvision rejected model '{tv_name}' with weights={weights!r} and options {options}: "
            f"{type(exc).__name__}: {exc}. Weights must be None, 'DEFAULT' or a name listed by "
            f"torchvision.models.get_model_weights('{tv_name}'); other options must be arguments of the "
            f"torchvision builder"
        ) from exc
    except (OSError, RuntimeError, pickle.UnpicklingError) as exc:
        if not pretrained:
            raise
        raise ConfigError(
            f"could not load pretrained weights {weights!r} for torchvision model '{tv_name}': "
            f"{type(exc).__name__}: {exc}. Without internet, place the checkpoint in "
            f"{torch.hub.get_dir()}/checkpoints first, or use weights=None"
        ) from exc
    if pretrained:
        _replace_head(model, tv_name, num_classes)
    if input_shape[0] != 3:
        _adapt_first_conv(model, tv_name, input_shape[0], pretrained)
    return model


def _set_submodule(model: nn.Module, qualname: str, new: nn.Module) -> None:
    parent_name, _, attr = qualname.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def _replace_head(model: nn.Module, tv_name: str, num_classes: int) -> None:
    """Replace the last ``nn.Linear`` by a fresh one with ``num_classes`` outputs if needed."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(
            f"torchvision model '{tv_name}' has no linear classifier head to resize to {num_classes} "
            f"classes; use weights=None or a model with a linear head"
        )
    qualname, head = linears[-1]
    if head.out_features != num_classes:
        _set_submodule(model, qualname, nn.Linear(head.in_features, num_classes, bias=head.bias is not None))


def _adapt_first_conv(model: nn.Module, tv_name: str, channels: int, pretrained: bool) -> None:
    """Replace the first ``nn.Conv2d`` by one taking ``channels`` input channels (see module docstring)."""
    first = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if first is None or first[1].groups != 1:
        raise ConfigError(
            f"torchvision model '{tv_name}' has no plain first Conv2d to adapt to {channels} input "
            f"channels; use 3-channel inputs"
        )
    qualname, conv = first
    new = nn.Conv2d(
        channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        old = conv.weight
        index = torch.arange(channels, device=old.device) % old.shape[1]
        if pretrained and channels == 1:
            weight = old.sum(dim=1, keepdim=True)
        elif pretrained:
            weight = old[:, index] * (old.shape[1] / channels)
        else:
            weight = old[:, index]
        new.weight.copy_(weight)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    _set_submodule(model, qualname, new)
