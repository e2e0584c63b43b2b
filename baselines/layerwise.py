"""Layer-wise pruning from an explicit per-layer sparsity map -- how an RL agent's policy is applied.

This is the action interface of PuRL (M. Gupta et al., "Learning to Prune Deep Neural Networks via
Reinforcement Learning", 2020) and of AMC (Y. He et al., "AMC: AutoML for Model Compression and
Acceleration on Mobile Devices", ECCV 2018): a policy emits one sparsity per layer, and each layer is
pruned to it by magnitude.

``Layerwise(sparsities={name: s})``: layers missing from the map stay dense (0); unknown names raise
:class:`~purl.errors.PruningError`. How the map relates to a global target ``sparsity``:

* ``sparsity=None`` -- the map is applied as is: layer ``l`` loses exactly ``round(s_l * n_l)``
  weights (the :mod:`purl.pruning.masks` contract). A layer that breaks the constraints raises.
* ``sparsity=s`` and ``rescale=False`` (default) -- the map must be *consistent* with ``s``: the
  target ``round(s * total)`` has to be reachable with every layer at ``floor`` or ``ceil`` of
  ``s_l * n_l``; the rounding is then chosen (largest remainder) to hit it exactly. An inconsistent
  map raises, saying which global sparsity the map gives.
* ``sparsity=s`` and ``rescale=True`` -- the map is a *profile*: all layer sparsities are multiplied
  by one factor (capped by the constraints, water-filling the excess onto the other layers) so that
  the global count is exactly ``round(s * total)``.

Channel form (``prune.granularity=channel``): the map names channel groups (``purl list`` a model's groups
with :func:`purl.pruning.channels.channel_groups`) and gives the fraction of each group's channels removed,
rounded down to what ``prune.min_channels`` / ``prune.channel_multiple`` allow; the lowest-norm channels go.
Without ``rescale`` the map is applied as given (the row's ``achieved_sparsity`` is its cost); with
``rescale=True`` the fractions are scaled by one factor until the budget lands, like the other channel
allocators (:func:`baselines.channel.channel_layerwise`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any

import torch

from purl.baselines._alloc import proportional_counts, round_to_total
from purl.baselines.base import Allocator, register_allocator
from purl.baselines.channel import channel_layerwise
from purl.errors import ConfigError, PruningError
from purl.pruning.constraints import Constraints
from purl.pruning.layers import PrunableLayer
from purl.pruning.masks import pruned_count

__all__ = ["Layerwise"]


@register_allocator("layerwise")
class Layerwise(Allocator):
    """Layer-wise: a given {layer: sparsity} map (an RL agent's action), magnitude within each layer."""

    accepts_no_target = True
    granularities = ("weight", "channel")
    channel_form = staticmethod(channel_layerwise)  # its channel form (baselines/channel.py)

    def __init__(self, sparsities: Mapping[str, float], rescale: bool = False) -> None:
        if not isinstance(sparsities, Mapping):
            raise ConfigError(f"layerwise sparsities must be a mapping {{layer name: sparsity}}, got {sparsities!r}")
        bad = {
            name: s
            for name, s in sparsities.items()
            if not isinstance(s, Real) or isinstance(s, bool) or not math.isfinite(s) or not 0.0 <= s <= 1.0
        }
        if bad:
            raise ConfigError(f"layerwise sparsities must be numbers in [0, 1]; bad entries: {bad}")
        self.sparsities = {str(name): float(s) for name, s in sparsities.items()}
        self.rescale = bool(rescale)

    def _check_names(self, layers: Sequence[PrunableLayer]) -> None:
        names = {layer.name for layer in layers}
        unknown = sorted(set(self.sparsities) - names)
        if unknown:
            raise PruningError(
                f"layerwise sparsities name unknown layer(s) {unknown}; prunable layers: "
                + ", ".join(layer.name for layer in layers)
            )

    def allocate(
        self,
        layers: Sequence[PrunableLayer],
        sparsity: float | None,
        constraints: Constraints = Constraints(),
        *,
        generator: torch.Generator | None = None,
    ) -> dict[str, int]:
        self._check_names(layers)
        s = [self.sparsities.get(layer.name, 0.0) for layer in layers]
        caps = constraints.max_pruned(layers)
        cap = [caps[layer.name] for layer in layers]
        if sparsity is None:
            counts = {layer.name: pruned_count(sl, layer.numel) for layer, sl in zip(layers, s, strict=True)}
            bad = [
                f"{layer.name}: sparsity {sl:g} prunes {counts[layer.name]} > {caps[layer.name]} allowed"
                for layer, sl in zip(layers, s, strict=True)
                if counts[layer.name] > caps[layer.name]
            ]
            if bad:
                raise PruningError(f"layerwise sparsities break {constraints.describe()}: " + "; ".join(bad))
            return counts
        k = self.target(layers, sparsity, constraints)
        exact = [sl * layer.numel for layer, sl in zip(layers, s, strict=True)]
        if self.rescale:
            if k > 0 and not any(exact):
                raise PruningError("cannot rescale an all-zero layerwise sparsity map to a positive target")
            counts = proportional_counts(exact, [0] * len(layers), cap, k)
            return {layer.name: c for layer, c in zip(layers, counts, strict=True)}
        lo = [int(math.floor(round(x, 6))) for x in exact]
        hi = [min(int(math.ceil(round(x, 6))), c) for x, c in zip(exact, cap, strict=True)]
        over = [layer.name for layer, low, c in zip(layers, lo, cap, strict=True) if low > c]
        if over:
            raise PruningError(f"layerwise sparsities of {over} break {constraints.describe()}")
        if not sum(lo) <= k <= sum(hi):
            total = sum(layer.numel for layer in layers)
            raise PruningError(
                f"layerwise sparsities give global sparsity {sum(exact) / total:.6g}, inconsistent with the "
                f"target {float(sparsity):g} ({k} of {total} weights); pass sparsity=None to apply the map as is, "
                "or use rescale=True to scale it to the target"
            )
        counts = round_to_total(exact, lo, hi, k)
        return {layer.name: c for layer, c in zip(layers, counts, strict=True)}

    def channel_options(self) -> dict[str, Any]:
        """The map and ``rescale`` (as given, or scaled until the budget lands) for the channel form."""
        return {"fractions": self.sparsities, "rescale": self.rescale}

    def __repr__(self) -> str:
        return f"Layerwise({len(self.sparsities)} layers, rescale={self.rescale})"
