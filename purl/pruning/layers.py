"""Discovery of the prunable layers of a model.

The rule (one "layer" = one prunable weight tensor, masked in place):

* the ``weight`` of every ``nn.Conv1d/2d/3d`` and ``nn.Linear`` module, subclasses included
  (depthwise and 1x1 shortcut convolutions; ``nn.MultiheadAttention.out_proj``, a ``Linear``),
  named by the module's qualified name (``"fc1"``, ``"layer1.0.conv1"``);
* the input projections of every ``nn.MultiheadAttention`` (which it holds as raw parameters, not
  modules): ``in_proj_weight`` (packed q/k/v), or ``q_proj_weight``/``k_proj_weight``/``v_proj_weight``
  when ``kdim``/``vdim`` differ from ``embed_dim``, named by the parameter's qualified name
  (``"encoder.layers.0.self_attention.in_proj_weight"``). With its ``out_proj`` this covers every
  weight matrix of an attention block (torchvision's ViT, ``nn.TransformerEncoder``).

Never pruned: biases, normalisation layers, embeddings and other raw parameters (e.g. a ViT's
``class_token``/``pos_embedding``), ``ConvTranspose``, ``Bilinear``, ``Embedding`` and recurrent
(``RNN``/``LSTM``/``GRU``) weights. :func:`uncovered_weights` names the weight matrices of a model that
this rule leaves out. ``include``/``exclude`` are shell-style patterns (:mod:`fnmatch`) on the layer
name, e.g. ``"fc*"``, ``"layer1.*"`` or ``"*.in_proj_weight"``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from purl.errors import PruningError

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)

#: Modules whose prunable weights are raw parameters (see :func:`attention_params`).
ATTENTION_TYPES: tuple[type[nn.Module], ...] = (nn.MultiheadAttention,)

#: Human-readable summary of the rule, for ``purl list models`` and error messages.
PRUNABLE_FAMILIES = ("Conv1d/Conv2d/Conv3d weights", "Linear weights (incl. MultiheadAttention.out_proj)",
                     "MultiheadAttention input projections (in_proj_weight or q/k/v_proj_weight)")

#: What the rule never prunes (also the examples :func:`uncovered_weights` reports).
NEVER_PRUNED = ("biases", "normalisation layers", "embeddings and other raw parameters (e.g. a ViT's class_token, "
                "pos_embedding)", "ConvTranspose", "Bilinear", "RNN/LSTM/GRU weights")


def describe_prunable() -> str:
    """One line stating which weights are prunable and which never are (``purl list models``)."""
    return f"pruning covers: {'; '.join(PRUNABLE_FAMILIES)}. Never pruned: {', '.join(NEVER_PRUNED)}."


def attention_params(module: nn.Module) -> tuple[str, ...]:
    """The prunable raw-parameter names of an attention module (``()`` for any other module)."""
    if not isinstance(module, ATTENTION_TYPES):
        return ()
    if getattr(module, "in_proj_weight", None) is not None:
        return ("in_proj_weight",)
    return tuple(p for p in ("q_proj_weight", "k_proj_weight", "v_proj_weight")
                 if getattr(module, p, None) is not None)


@dataclass(frozen=True)
class PrunableLayer:
    """One prunable weight tensor: the module that owns it, the attribute holding it, and its name.

    ``param`` is ``"weight"`` for Conv/Linear modules (``name`` is then the module's qualified name)
    and e.g. ``"in_proj_weight"`` for attention input projections (``name`` is then the parameter's
    qualified name, ``<module>.in_proj_weight``).
    """

    name: str
    module: nn.Module
    param: str = "weight"

    @property
    def weight(self) -> nn.Parameter:
        return getattr(self.module, self.param)  # type: ignore[no-any-return]

    @property
    def numel(self) -> int:
        return self.weight.numel()

    @property
    def kind(self) -> str:
        """Lowercase module type, e.g. ``conv2d`` or ``linear``; attention input projections are ``linear``."""
        return "linear" if self.param != "weight" else type(self.module).__name__.lower()


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
        if id(module) in seen:
            continue
        if isinstance(module, PRUNABLE_TYPES):
            candidates = [(name, "weight")]
        else:
            candidates = [(f"{name}.{p}" if name else p, p) for p in attention_params(module)]
        if not candidates:
            continue
        seen.add(id(module))
        for layer_name, param in candidates:
            if include and not _matches(layer_name, include):
                continue
            if exclude and _matches(layer_name, exclude):
                continue
            layers.append(PrunableLayer(layer_name, module, param))
    if not layers:
        what = type(model).__name__
        raise PruningError(
            f"model {what} has no prunable layers: prunable are {'; '.join(PRUNABLE_FAMILIES)}"
            + (f" matching include={list(include)}" if include else "")
            + (f" and not exclude={list(exclude)}" if exclude else "")
        )
    return layers


def uncovered_weights(model: nn.Module) -> list[str]:
    """Qualified names of weight matrices (parameters with 2+ dims) that no prunable layer covers.

    Ignores include/exclude (it reports what the rule itself cannot prune), e.g. an ``Embedding`` or
    ``LSTM`` weight or a ViT's ``class_token``/``pos_embedding``. Useful to check that a global sparsity
    over the prunable layers means what you think for an unusual architecture.
    """
    covered = {id(layer.weight) for layer in _all_layers(model)}
    return [name for name, p in model.named_parameters() if p.dim() >= 2 and id(p) not in covered]


def _all_layers(model: nn.Module) -> list[PrunableLayer]:
    try:
        return find_prunable_layers(model)
    except PruningError:
        return []
