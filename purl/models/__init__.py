"""The PuRL model zoo: build any model by name with :func:`build_model`.

Names resolve in this order:

1. ``torchvision:<name>``: any torchvision classification model (``torchvision:resnet50``).
2. ``package.module:callable``: your own builder or ``nn.Module`` class. It is called with
   ``input_shape=...`` and ``num_classes=...`` when its signature accepts them (by name or through
   ``**kwargs``), plus the extra options; it must return an ``nn.Module``.
3. A registered name (see :func:`list_models`): ``mlp``, ``lenet-300-100``, ``lenet-5``,
   ``resnet-20/32/56``, ``wrn``, ``wrn-28-8``, ``wrn-28-10``.
4. A bare torchvision classification model name (``resnet18``, ``mobilenet_v2``, ``vgg16``, ...).

Every registered builder is ``builder(input_shape, num_classes, **options)`` where ``input_shape``
is the dataset's ``(C, H, W)``. Unknown options raise :class:`~purl.errors.ConfigError` naming the
option and the allowed ones. Adding a model is one decorated function::

    @MODELS.register("my-net")
    def my_net(input_shape, num_classes, *, width: int = 64) -> nn.Module:
        \"\"\"One-line description shown by ``purl list``.\"\"\"

After construction :func:`build_model` runs one forward pass of a zero batch (2 samples, eval mode,
no grad, on the model's device) and checks the output is a ``(2, num_classes)`` tensor, so shape
problems surface as a ConfigError at build time instead of deep inside training. This also
materialises lazy modules. Train/eval flags and BatchNorm statistics are left unchanged.

The zoo's own models use standard ``nn.Conv2d``/``nn.Linear``/``nn.BatchNorm2d`` layers (so the
pruning core finds every prunable layer by type; for any model, :mod:`purl.pruning.layers` states the
rule: Conv/Linear weights plus ``nn.MultiheadAttention``'s projections, shown by ``purl list models``)
and non-in-place ReLUs (so forward hooks on a layer see its unmodified output).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from purl.errors import ConfigError, RegistryError
from purl.models import lenet, mlp, resnet_cifar, wide_resnet  # noqa: F401  (registers the builders)
from purl.models._common import MODELS, InputShape, check_int
from purl.models.torchvision_models import (
    PREFIX,
    build_torchvision,
    resolve_torchvision_name,
    torchvision_names,
)

__all__ = ["MODELS", "build_model", "list_models"]

_RESERVED = ("input_shape", "num_classes")


def list_models() -> dict[str, str]:
    """Registered model name -> one-line description, plus notes on torchvision and user models."""
    described = MODELS.describe()
    described["torchvision:<name>"] = (
        "any torchvision classification model (e.g. resnet18, mobilenet_v2, vgg16), also accepted as a "
        "bare torchvision name; random init (weights=None) unless pretrained weights are cached locally"
    )
    described["package.module:callable"] = (
        "your own builder or nn.Module class, called with input_shape and num_classes if it accepts them"
    )
    return described


def build_model(name: str, *, input_shape: Sequence[int], num_classes: int, **kwargs: Any) -> nn.Module:
    """Build model ``name`` for inputs of shape ``input_shape = (C, H, W)`` and ``num_classes`` outputs.

    :raises RegistryError: ``name`` is not a registered, torchvision or importable model.
    :raises ConfigError: bad ``input_shape``/``num_classes``, an unknown or invalid option in ``kwargs``,
        or the built model does not map ``(N, C, H, W)`` inputs to ``(N, num_classes)`` logits.
    """
    shape = _check_input_shape(input_shape)
    num_classes = check_int("num_classes", num_classes, 1)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"model name must be a non-empty string, got {name!r}")
    name = name.strip()
    if name.lower().startswith(PREFIX):
        tv_name = name[len(PREFIX) :]
        model = build_torchvision(tv_name, shape, num_classes, **kwargs)
    elif ":" in name:
        model = _call_user(MODELS.get(name), name, shape, num_classes, kwargs)
    elif name in MODELS:
        model = _call_registered(MODELS.get(name), name, shape, num_classes, kwargs)
    elif (tv_name := resolve_torchvision_name(name, explicit=False)) is not None:
        model = build_torchvision(tv_name, shape, num_classes, **kwargs)
    else:
        raise RegistryError(_unknown_name_message(name))
    _check_forward(model, name, shape, num_classes)
    return model


def _check_input_shape(input_shape: object) -> InputShape:
    if (
        isinstance(input_shape, (str, bytes))
        or not isinstance(input_shape, Sequence)
        or len(input_shape) != 3
        or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in input_shape)
    ):
        raise ConfigError(
            f"input_shape must be (channels, height, width) of positive integers, got {input_shape!r}"
        )
    c, h, w = input_shape
    return (c, h, w)


def _unknown_name_message(name: str) -> str:
    candidates = [*MODELS.names(), *torchvision_names()]
    close = difflib.get_close_matches(name.lower(), candidates, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return (
        f"unknown model '{name}'; allowed: {', '.join(MODELS.names())}, any torchvision classification "
        f"model as 'torchvision:<name>' or a bare name (e.g. resnet18, mobilenet_v2, vgg16), or "
        f"'package.module:callable' for your own.{hint}"
    )


def _signature(fn: Callable[..., object]) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


def _check_options(sig: inspect.Signature | None, name: str, kwargs: Mapping[str, object]) -> None:
    """Raise ConfigError if ``kwargs`` has options ``sig`` cannot take (anything goes with ``**kwargs``)."""
    if sig is None or not kwargs:
        return
    params = sig.parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    named = (p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    allowed = [p.name for p in named if p.name not in _RESERVED]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(repr(k) for k in unknown)} for model '{name}'; "
            f"allowed: {', '.join(allowed) or '(none)'}"
        )


def _call_registered(
    builder: Callable[..., nn.Module], name: str, shape: InputShape, num_classes: int, kwargs: dict[str, Any]
) -> nn.Module:
    _check_options(_signature(builder), name, kwargs)
    return builder(shape, num_classes, **kwargs)


def _call_user(
    obj: object, name: str, shape: InputShape, num_classes: int, kwargs: dict[str, Any]
) -> nn.Module:
    if isinstance(obj, nn.Module) or not callable(obj):
        raise ConfigError(
            f"'{name}' must name a callable (function or nn.Module class) that returns an nn.Module, "
            f"got {type(obj).__name__}"
        )
    sig = _signature(obj)
    _check_options(sig, name, kwargs)
    call_kwargs = dict(kwargs)
    if sig is not None:
        params = sig.parameters
        var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
        for key, value in (("input_shape", shape), ("num_classes", num_classes)):
            param = params.get(key)
            if var_kw or (param is not None and param.kind is not param.POSITIONAL_ONLY):
                call_kwargs[key] = value
    model = obj(**call_kwargs)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"'{name}' returned {type(model).__name__}, expected an nn.Module")
    return model


def _check_forward(model: nn.Module, name: str, shape: InputShape, num_classes: int) -> None:
    """Run a zero batch through ``model`` in eval mode; ConfigError unless it yields (2, num_classes)."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, *shape, device=device, dtype=dtype))
    except Exception as exc:  # any failure here means the model does not fit the data
        raise ConfigError(
            f"model '{name}' cannot process inputs of shape (N, {', '.join(map(str, shape))}): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    finally:
        for module, training in modes.items():
            module.training = training
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(
            f"model '{name}' must map inputs of shape (N, {', '.join(map(str, shape))}) to logits of "
            f"shape (N, {num_classes}), got {got} for N=2"
        )
