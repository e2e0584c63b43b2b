"""Random pruning ("random uniform"): every layer at the global sparsity, weights drawn at random.

A sanity-check baseline used throughout the pruning literature, e.g. Z. Liu, M. Sun, T. Zhou,
G. Huang and T. Darrell, "Rethinking the Value of Network Pruning", ICLR 2019, and S. Liu et al.,
"The Unreasonable Effectiveness of Random Pruning", ICLR 2022.

Choice made here: the per-layer *counts* are those of uniform pruning (each layer at the global
sparsity, largest-remainder rounding, constraints honoured), and inside each layer the pruned
weights are a uniformly random subset of that size (``torch.randperm``), ignoring magnitudes.
Pass a ``torch.Generator`` for reproducible masks (otherwise torch's global RNG is used). Note that
re-pruning under a gradual schedule draws fresh random masks each time.

Channel form (``prune.granularity=channel``): uniform channel pruning's counts (every coupled group loses the
same fraction of its channels), and the channels removed are a uniformly random subset of each group
(:func:`baselines.channel.random_removal`; a grouped convolution loses the same offsets in every segment).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from purl.baselines.base import register_allocator
from purl.baselines.channel import random_removal
from purl.baselines.uniform import Uniform
from purl.pruning.layers import PrunableLayer

if TYPE_CHECKING:
    from purl.pruning.channels import ChannelGraph

__all__ = ["RandomPruning", "random_mask"]


def random_mask(weight: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """Boolean keep-mask of ``weight``'s shape with exactly ``k`` uniformly random positions False."""
    n = weight.numel()
    device = generator.device if generator is not None else torch.device("cpu")
    keep = torch.ones(n, dtype=torch.bool, device=device)
    if k:
        keep[torch.randperm(n, generator=generator, device=device)[:k]] = False
    return keep.view(weight.shape).to(weight.device)


@register_allocator("random")
class RandomPruning(Uniform):
    """Random: uniform per-layer counts, random weights within each layer (sanity baseline).

    The counts are exactly :class:`~baselines.uniform.Uniform`'s; only the choice of weights differs.
    """

    def select(
        self,
        layers: Sequence[PrunableLayer],
        counts: Mapping[str, int],
        *,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        return {layer.name: random_mask(layer.weight, counts[layer.name], generator) for layer in layers}

    def drop_channels(
        self,
        graph: ChannelGraph,
        keep: Mapping[str, int],
        *,
        norm: str = "l1",
        generator: torch.Generator | None = None,
    ) -> dict[str, list[int]]:
        """The channels each group loses: a uniformly random subset of the size ``keep`` implies (norms ignored)."""
        del norm
        return random_removal(graph, keep, generator)
