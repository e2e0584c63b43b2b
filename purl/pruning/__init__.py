"""Pruning core: prunable-layer discovery, exact magnitude masks, and sparsity/FLOPs metrics."""

from purl.pruning.layers import PRUNABLE_TYPES, PrunableLayer, find_prunable_layers
from purl.pruning.masks import MaskState, magnitude_mask, pruned_count
from purl.pruning.metrics import LayerProfile, PruningStats, near_collapsed_layers, profile_model, pruning_stats

__all__ = [
    "PRUNABLE_TYPES",
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
