"""Discovery of the prunable layers of a model.

By default the weight tensors of every ``Conv1d/2d/3d`` and ``Linear`` module are
prunable (depthwise and 1x1 shortcut convolutions included). Biases and
normalisation layers are never pruned. ``include``/``exclude`` are shell-style
patterns (:mod:`fnmatch`) on the module's qualified name, e.g. ``"fc*"`` or
``"layer1.*"``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from purl.errors import PruningError

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass(frozen=True)
class PrunableLayer:
    """One prunable weight tensor: the module that owns it and its qualified name."""

    name: str
    module: nn.Module

    @property
    def weight(self) -> nn.Parameter:
        return self.module.weight  # type: ignore[return-value]

    @property
    def numel(self) -> int:
        return self.weight.numel()

    @property
    def kind(self) -> str:
        """Lowercase module type, e.g. ``conv2d`` or ``linear``."""
        return type(self.module).__name__.lower()


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def find_prunable_layers(
    model: nn.Module, include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> list[PrunableLayer]:
    """Return the model's prunable layers in forward-definition order.

    ``include`` (if non-empty) keeps only matching names; ``exclude`` then drops
    matching names. A module shared under several names is listed once.
    Raises :class:`PruningError` when nothing is left to prune.
    """
    layers: list[PrunableLayer] = []
    seen: set[int] = set()
    for name, module in model.named_modules():
        if not isinstance(module, PRUNABLE_TYPES) or id(module) in seen:
            continue
        if include and not _matches(name, include):
            continue
        if exclude and _matches(name, exclude):
            continue
        seen.add(id(module))
        layers.append(PrunableLayer(name, module))
    if not layers:
        what = type(model).__name__
        raise PruningError(
            f"model {what} has no prunable layers: prunable are weights of "
            f"{', '.join(t.__name__ for t in PRUNABLE_TYPES)}"
            + (f" matching include={list(include)}" if include else "")
            + (f" and not exclude={list(exclude)}" if exclude else "")
        )
    return layers
