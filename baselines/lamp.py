"""Layer-Adaptive Magnitude-based Pruning (LAMP).

Reference: J. Lee, S. Park, S. Mo, S. Ahn and J. Shin, "Layer-adaptive Sparsity for the
Magnitude-based Pruning", ICLR 2021 (reference code: github.com/jaeho-lee/layer-adaptive-sparsity).

The LAMP score of weight ``u`` of a layer, with the layer's weights sorted so that
``|w_1| <= |w_2| <= ...``, is ``w_u^2 / sum_{v >= u} w_v^2``: its squared magnitude over the squared
magnitudes of the weights of the same layer that are at least as large. It is computed per layer
from the sorted squared weights with a reverse cumulative sum (in float64). The ``round(s * total)``
weights with the smallest scores over the whole network are pruned: a *global* threshold on scores
(exact, ties by layer order then flat index, with the same selection as Global MP). Inside a layer
the score increases with magnitude, so each layer loses its smallest-magnitude weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from purl.baselines._select import TensorKeys, select_smallest, select_with_caps
from purl.baselines.base import Allocator, register_allocator
from purl.baselines.channel import channel_lamp
from purl.pruning.constraints import Constraints
from purl.pruning.layers import PrunableLayer

__all__ = ["LAMP", "lamp_scores"]


def lamp_scores(weight: Tensor) -> Tensor:
    """LAMP scores of one layer, float64, same shape as ``weight`` (all-zero weights score 0)."""
    sq = weight.detach().reshape(-1).to(torch.float64).square()
    ordered, order = torch.sort(sq, stable=True)
    tail = ordered.flip(0).cumsum(0).flip(0)  # sum of the squares at or after each sorted position
    score_sorted = torch.where(tail > 0, ordered / tail.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
    scores = torch.empty_like(sq)
    scores[order] = score_sorted
    return scores.view(weight.shape)


@register_allocator("lamp")
class LAMP(Allocator):
    """LAMP: global threshold on layer-normalised magnitude scores (Lee et al. 2021)."""

    granularities = ("weight", "channel")
    channel_form = staticmethod(channel_lamp)  # its channel form (baselines/channel.py)

    def allocate(
        self,
        layers: Sequence[PrunableLayer],
        sparsity: float | None,
        constraints: Constraints = Constraints(),
        *,
        generator: torch.Generator | None = None,
    ) -> dict[str, int]:
        k = self.target(layers, sparsity, constraints)
        src = TensorKeys([lamp_scores(layer.weight) for layer in layers])
        ids = list(range(len(layers)))
        if constraints.unconstrained:
            cuts = select_smallest(src, ids, k)
        else:
            caps = constraints.max_pruned(layers)
            cuts = select_with_caps(src, ids, k, [caps[layer.name] for layer in layers])
        return {layer.name: cuts[j].count for j, layer in enumerate(layers)}
