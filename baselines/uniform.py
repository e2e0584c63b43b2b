"""Uniform magnitude pruning: every layer pruned to the same sparsity, smallest |w| first.

References: M. Zhu and S. Gupta, "To prune, or not to prune: exploring the efficacy of pruning for
model compression", arXiv:1710.01878, 2017; T. Gale, E. Elsen and S. Hooker, "The State of Sparsity
in Deep Neural Networks", arXiv:1902.09574, 2019.

Counts: layer ``l`` loses ``s * n_l`` weights rounded by largest remainder so the global count is
exactly ``round(s * total)``. Under constraints, capped layers stay at their cap and the common
sparsity of the others rises until the target is met (water-filling).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from purl.baselines._alloc import proportional_counts
from purl.baselines.base import Allocator, register_allocator
from purl.baselines.channel import channel_uniform
from purl.pruning.constraints import Constraints
from purl.pruning.layers import PrunableLayer

__all__ = ["Uniform", "uniform_counts"]


def uniform_counts(layers: Sequence[PrunableLayer], k: int, caps: Mapping[str, int]) -> dict[str, int]:
    """``k`` pruned weights spread at one common sparsity over ``layers``, each within ``caps``."""
    counts = proportional_counts(
        [float(layer.numel) for layer in layers], [0] * len(layers), [caps[layer.name] for layer in layers], k
    )
    return {layer.name: c for layer, c in zip(layers, counts, strict=True)}


@register_allocator("uniform")
class Uniform(Allocator):
    """Uniform: every layer at the same sparsity, by magnitude (Zhu & Gupta 2017; Gale et al. 2019)."""

    granularities = ("weight", "channel")
    channel_form = staticmethod(channel_uniform)  # its channel form (baselines/channel.py)

    def allocate(
        self,
        layers: Sequence[PrunableLayer],
        sparsity: float | None,
        constraints: Constraints = Constraints(),
        *,
        generator: torch.Generator | None = None,
    ) -> dict[str, int]:
        caps = constraints.max_pruned(layers)
        return uniform_counts(layers, self.target(layers, sparsity, constraints, caps), caps)
