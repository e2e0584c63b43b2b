"""Pruning core: prunable-layer discovery, exact magnitude masks, and sparsity/FLOPs metrics."""

from purl.pruning.layers import (
    ATTENTION_TYPES,
    PRUNABLE_TYPES,
    PrunableLayer,
    attention_params,
    describe_prunable,
    find_prunable_layers,
    uncovered_weights,
)
from purl.pruning.masks import MaskState, magnitude_mask, pruned_count
from purl.pruning.metrics import LayerProfile, PruningStats, near_collapsed_layers, profile_model, pruning_stats

__all__ = [
    "ATTENTION_TYPES",
    "PRUNABLE_TYPES",
    "attention_params",
    "describe_prunable",
    "uncovered_weights",
    "LayerProfile",
    "MaskState",
    "PrunableLayer",
    "PruningStats",
    "find_prunable_layers",
    "magnitude_mask",
    "profile_model",
    "pruned_count",
    "pruning_stats",
    "near_collapsed_layers",
]
