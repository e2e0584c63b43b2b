"""The observation: one feature vector describing the layer about to be pruned.

Space: ``Box(0, 1, (20,), float32)``; every feature is in [0, 1]. Static features (fixed per layer)
are precomputed once; dynamic ones are written into a copy of that row each step. Min-max
normalisation (AMC) is over the prunable layers of the model: ``(x - min) / (max - min)``, 0 when
all layers share the value.

===  ====================  ========================================================================
idx  name                  meaning (normalisation)
===  ====================  ========================================================================
0    ``layer_index``       index of the layer among the prunable layers (/ (L - 1); 0 when L == 1)
1    ``is_conv``           1 for a convolution, 0 for a linear layer (AMC's layer type)
2    ``in_channels``       input channels / features (min-max)
3    ``out_channels``      output channels / features (min-max)
4    ``stride``            first stride, 1 for linear layers (min-max)
5    ``kernel_size``       product of the kernel dims, 1 for linear layers (min-max)
6    ``n_weights``         number of weights of the layer (min-max)
7    ``flops_reduced``     MACs removed so far / dense MACs of the whole model (AMC's "reduced")
8    ``flops_rest``        current MACs of the prunable layers after this one / dense MACs (AMC's "rest")
9    ``prev_action``       sparsity applied to the previous step's layer (0 at reset; AMC's a_{t-1})
10   ``global_sparsity``   removed fraction of the budget metric so far (prunable weights/params or MACs)
11   ``accuracy``          top-1 accuracy of the network as pruned so far, on the reward split
12   ``target_sparsity``   the episode's target, a fraction of the same budget metric as feature 10
13   ``target_accuracy``   the accuracy target
14   ``param_share``       this layer's weights / all prunable weights
15   ``flops_share``       this layer's dense MACs / dense MACs of the whole model
16   ``pass_progress``     pass index / (passes - 1) (0 with one pass)
17   ``layer_sparsity``    this layer's current sparsity (non-zero only on later passes)
18   ``allowed_min``       smallest sparsity the budget/constraints let this layer take now
19   ``allowed_max``       largest sparsity the budget/constraints let this layer take now
===  ====================  ========================================================================

Every feature means the same at every granularity and budget metric (``env.budget_metric``): 10 and 12 are
fractions of the budget metric, 7-8 and 15 of the MACs, 6 and 14 count Conv/Linear weights (a channel group's:
its layers' weights), 9 and 17-19 fractions of the step's units (a layer's weights, a group's channels).

Features 18-19 expose AMC's action wall to the agent: with the budget on, the action is clipped
to ``[allowed_min, allowed_max]``. The terminal observation (after the last layer) repeats the
last layer's static features with the final dynamic values.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from gymnasium import spaces

from purl.pruning import LayerProfile

FEATURES: tuple[str, ...] = (
    "layer_index",
    "is_conv",
    "in_channels",
    "out_channels",
    "stride",
    "kernel_size",
    "n_weights",
    "flops_reduced",
    "flops_rest",
    "prev_action",
    "global_sparsity",
    "accuracy",
    "target_sparsity",
    "target_accuracy",
    "param_share",
    "flops_share",
    "pass_progress",
    "layer_sparsity",
    "allowed_min",
    "allowed_max",
)
N_FEATURES = len(FEATURES)
INDEX = {name: i for i, name in enumerate(FEATURES)}
_FLOPS_REDUCED, _FLOPS_REST, _PREV_ACTION = INDEX["flops_reduced"], INDEX["flops_rest"], INDEX["prev_action"]
_GLOBAL_SPARSITY, _ACCURACY, _PASS_PROGRESS = INDEX["global_sparsity"], INDEX["accuracy"], INDEX["pass_progress"]
_LAYER_SPARSITY, _ALLOWED_MIN, _ALLOWED_MAX = INDEX["layer_sparsity"], INDEX["allowed_min"], INDEX["allowed_max"]


def observation_space() -> spaces.Box:
    """``Box(0, 1, (N_FEATURES,), float32)``."""
    return spaces.Box(0.0, 1.0, shape=(N_FEATURES,), dtype=np.float32)


def _minmax(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    span = arr.max() - arr.min()
    return (arr - arr.min()) / span if span > 0 else np.zeros_like(arr)


class ObservationBuilder:
    """Precomputes the static rows; ``build`` fills in the dynamic features of one step."""

    def __init__(
        self,
        profiles: Sequence[LayerProfile],
        dense_flops: float,
        *,
        passes: int,
        target_sparsity: float,
        target_accuracy: float,
    ) -> None:
        n = len(profiles)
        total_weights = sum(p.numel for p in profiles)
        rows = np.zeros((n, N_FEATURES), dtype=np.float64)
        rows[:, INDEX["layer_index"]] = np.arange(n) / (n - 1) if n > 1 else 0.0
        rows[:, INDEX["is_conv"]] = [0.0 if p.kind == "linear" else 1.0 for p in profiles]
        rows[:, INDEX["in_channels"]] = _minmax([p.in_channels for p in profiles])
        rows[:, INDEX["out_channels"]] = _minmax([p.out_channels for p in profiles])
        rows[:, INDEX["stride"]] = _minmax([p.stride for p in profiles])
        rows[:, INDEX["kernel_size"]] = _minmax([p.kernel_size for p in profiles])
        rows[:, INDEX["n_weights"]] = _minmax([p.numel for p in profiles])
        rows[:, INDEX["target_sparsity"]] = target_sparsity
        rows[:, INDEX["target_accuracy"]] = target_accuracy
        rows[:, INDEX["param_share"]] = [p.numel / total_weights for p in profiles]
        rows[:, INDEX["flops_share"]] = [p.macs / dense_flops if dense_flops else 0.0 for p in profiles]
        self.rows = np.clip(rows, 0.0, 1.0)
        self.passes = passes
        self.dense_flops = float(dense_flops)

    def build(
        self,
        layer: int,
        *,
        pass_index: int,
        prev_action: float,
        global_sparsity: float,
        accuracy: float,
        flops_removed: float,
        flops_rest: float,
        layer_sparsity: float,
        allowed: tuple[float, float],
    ) -> np.ndarray:
        """A new float32 observation for ``layer`` (never a view of internal state)."""
        row = self.rows[layer].copy()
        inv = 1.0 / self.dense_flops if self.dense_flops else 0.0
        row[_FLOPS_REDUCED] = flops_removed * inv
        row[_FLOPS_REST] = flops_rest * inv
        row[_PREV_ACTION] = prev_action
        row[_GLOBAL_SPARSITY] = global_sparsity
        row[_ACCURACY] = accuracy
        row[_PASS_PROGRESS] = pass_index / (self.passes - 1) if self.passes > 1 else 0.0
        row[_LAYER_SPARSITY] = layer_sparsity
        row[_ALLOWED_MIN], row[_ALLOWED_MAX] = allowed
        np.clip(row, 0.0, 1.0, out=row)
        return row.astype(np.float32)
