"""Sparsity and FLOPs metrics of a (masked) model.

FLOPs convention (documented in docs/ARCHITECTURE.md): we count multiply-
accumulates (MACs) of ``Conv1d/2d/3d`` and ``Linear`` layers for one input
sample. A layer's dense MACs are ``weight.numel() * (number of output
positions)``, i.e. every weight is used once per output position; its sparse
MACs are the dense MACs times the layer's density (fraction of weights kept),
as if zero weights were skipped. Normalisation, activation, pooling and bias
additions are not counted (they are a few percent and not prunable). Layers
that are not prunable count dense in both totals.

Attention (``nn.MultiheadAttention``): its input projections (``<mha>.in_proj_weight``,
or ``q/k/v_proj_weight``) are profiled as linear layers, the query rows once per query
token and the key/value rows once per key/value token; its ``out_proj`` once per query
token (it is called functionally, so its own forward hook never fires). The two
activation-by-activation products (``QK^T`` and ``softmax(.)V``) have no weights and
are not counted. A packed ``in_proj_weight``'s sparse MACs use its overall density,
exact for self-attention (as many query as key tokens).

Compression ratio = prunable weights / non-zero prunable weights.
Theoretical speedup = dense FLOPs / sparse FLOPs. A layer *collapses* when all
of its weights are pruned (it then disconnects the network).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from purl.pruning.layers import PRUNABLE_TYPES, attention_params


@dataclass(frozen=True)
class LayerProfile:
    """Static facts about one conv/linear layer, measured by a dry forward pass."""

    name: str
    kind: str
    in_channels: int
    out_channels: int
    kernel_size: int  # product of the kernel dims (1 for Linear)
    stride: int  # first stride (1 for Linear)
    groups: int
    numel: int
    macs: int  # dense multiply-accumulates per sample

    def as_dict(self) -> dict[str, int | str]:
        return asdict(self)


def _layer_profile(name: str, module: nn.Module, output: torch.Tensor | None) -> LayerProfile:
    """``output=None``: the layer did not run in the forward pass (e.g. an auxiliary head), so it costs 0 MACs."""
    weight = module.weight
    if isinstance(module, nn.Linear):
        positions = output[0].numel() // module.out_features if output is not None else 0
        return LayerProfile(name, "linear", module.in_features, module.out_features, 1, 1, 1,
                            weight.numel(), weight.numel() * positions)
    positions = output[0, 0].numel() if output is not None else 0  # output spatial positions of one sample
    kernel = math.prod(module.kernel_size)  # type: ignore[arg-type]
    stride = module.stride[0]  # type: ignore[index]
    return LayerProfile(name, type(module).__name__.lower(), module.in_channels, module.out_channels,  # type: ignore[arg-type]
                        kernel, stride, module.groups, weight.numel(), weight.numel() * positions)  # type: ignore[arg-type]


def _tokens(mha: nn.MultiheadAttention, x: object) -> int:
    """Tokens per sample of an attention input: ``(L, E)``, ``(L, N, E)`` or, batch-first, ``(N, L, E)``."""
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        return 0
    if x.dim() == 2:
        return int(x.shape[0])
    return int(x.shape[1] if mha.batch_first else x.shape[0])


def _linear_profile(name: str, weight: torch.Tensor, positions: int) -> LayerProfile:
    out_features, in_features = int(weight.shape[0]), int(weight.shape[1])
    return LayerProfile(name, "linear", in_features, out_features, 1, 1, 1, weight.numel(),
                        weight.numel() * positions)


def _attention_profiles(name: str, mha: nn.MultiheadAttention, query: int, key: int) -> dict[str, LayerProfile]:
    """Profiles of an attention module's input projections and ``out_proj`` for ``query``/``key`` tokens."""
    prefix = f"{name}." if name else ""
    profiles: dict[str, LayerProfile] = {}
    for param in attention_params(mha):
        weight = getattr(mha, param)
        if param == "in_proj_weight":  # rows [q; k; v]: q rows per query token, k and v rows per key token
            macs = (weight.numel() // 3) * (query + 2 * key)
            profiles[prefix + param] = LayerProfile(prefix + param, "linear", int(weight.shape[1]),
                                                    int(weight.shape[0]), 1, 1, 1, weight.numel(), macs)
        else:
            profiles[prefix + param] = _linear_profile(prefix + param, weight, query if param[0] == "q" else key)
    profiles[prefix + "out_proj"] = _linear_profile(prefix + "out_proj", mha.out_proj.weight, query)
    return profiles


@torch.no_grad()
def profile_model(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, LayerProfile]:
    """Profile every conv/linear layer and attention projection with one dry forward pass of a zero sample.

    The pass runs in eval mode on the model's device; the model's mode is restored afterwards. (The
    hooks it attaches also keep ``nn.TransformerEncoderLayer`` off its fused inference path, which would
    skip the submodule calls.) Layers the pass does not reach (e.g. GoogLeNet's auxiliary heads in eval
    mode) get 0 MACs.
    """
    profiles: dict[str, LayerProfile] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, PRUNABLE_TYPES):
            def hook(mod: nn.Module, _inp: object, out: torch.Tensor, name: str = name) -> None:
                if name not in profiles:
                    profiles[name] = _layer_profile(name, mod, out)
            handles.append(module.register_forward_hook(hook))
        elif attention_params(module):
            def attn_hook(mod: nn.Module, args: tuple, kwargs: dict, _out: object, name: str = name) -> None:
                query = args[0] if args else kwargs.get("query")
                key = args[1] if len(args) > 1 else kwargs.get("key", query)
                for key_name, prof in _attention_profiles(name, mod, _tokens(mod, query),  # type: ignore[arg-type]
                                                          _tokens(mod, key)).items():  # type: ignore[arg-type]
                    profiles.setdefault(key_name, prof)
            handles.append(module.register_forward_hook(attn_hook, with_kwargs=True))
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, *input_shape, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    for name, module in model.named_modules():
        if isinstance(module, PRUNABLE_TYPES) and name not in profiles:
            profiles[name] = _layer_profile(name, module, None)
        elif attention_params(module):
            for key_name, prof in _attention_profiles(name, module, 0, 0).items():  # type: ignore[arg-type]
                profiles.setdefault(key_name, prof)
    return profiles


@dataclass
class PruningStats:
    """Everything the harness reports about a pruned model's size and cost."""

    layer_sparsity: dict[str, float]
    global_sparsity: float
    nonzero_params: int
    total_params: int
    dense_flops: int
    sparse_flops: int
    compression_ratio: float
    theoretical_speedup: float
    collapsed_layers: list[str] = field(default_factory=list)
    near_collapsed_layers: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def pruning_stats(
    profiles: Mapping[str, LayerProfile], pruned: Mapping[str, int]
) -> PruningStats:
    """Combine static layer profiles with pruned counts (prunable layer name -> weights pruned).

    Layers in ``profiles`` but not in ``pruned`` are not prunable and count dense in FLOPs.
    """
    numels = {name: profiles[name].numel for name in pruned}
    total = sum(numels.values())
    n_pruned = sum(pruned.values())
    nonzero = total - n_pruned
    dense_flops = sum(p.macs for p in profiles.values())
    sparse = 0.0
    for name, prof in profiles.items():
        density = 1.0 - pruned[name] / prof.numel if name in pruned else 1.0
        sparse += prof.macs * density
    sparse_flops = int(round(sparse))
    return PruningStats(
        layer_sparsity={name: pruned[name] / numels[name] for name in pruned},
        global_sparsity=n_pruned / total if total else 0.0,
        nonzero_params=nonzero,
        total_params=total,
        dense_flops=dense_flops,
        sparse_flops=sparse_flops,
        compression_ratio=total / nonzero if nonzero else math.inf,
        theoretical_speedup=dense_flops / sparse_flops if sparse_flops else math.inf,
        collapsed_layers=[name for name in pruned if pruned[name] == numels[name]],
        near_collapsed_layers=near_collapsed_layers(profiles, pruned),
    )


def near_collapsed_layers(profiles: Mapping[str, LayerProfile], pruned: Mapping[str, int]) -> list[str]:
    """Layers left with fewer weights than output channels/features (collapsed ones included).

    Such a layer cannot feed every output even in principle: an output layer kept at 1 of 640
    weights is not "collapsed" (it has a weight) but is as good as disconnected.
    """
    return [name for name, count in pruned.items()
            if profiles[name].numel - count < min(profiles[name].out_channels, profiles[name].numel)]
