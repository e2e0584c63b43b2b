"""FLOPs budgets at weight granularity: the weight sparsity at which an allocator removes a FLOPs fraction.

With ``prune.budget_metric: flops`` at ``prune.granularity: weight``, a target ``t`` means "remove the
fraction ``t`` of the dense model's Conv/Linear MACs" (PuRL's FLOPs, :func:`purl.pruning.pruning_stats`: a
layer's sparse MACs are its dense MACs times its kept fraction of weights). Every allocator already turns a
weight-sparsity target into exact per-layer counts, so the FLOPs target is met by searching the *number of
weights* the allocator prunes: the smallest total count whose allocation removes at least ``t`` of the MACs
(binary search; the removed MACs are non-decreasing in the count for every built-in allocator). The result
removes at least the target and more by less than the MACs of one weight step of the allocator.

Why not rank weights by MACs directly: that is another method. Global MP at a FLOPs budget is still Global MP
(the smallest magnitudes go first); only where it stops is set by the FLOPs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from purl.errors import PruningError
from purl.pruning.constraints import Constraints
from purl.pruning.layers import PrunableLayer
from purl.pruning.metrics import LayerProfile

__all__ = ["flops_equivalent_sparsity", "removed_macs"]


def removed_macs(counts: Mapping[str, int], profiles: Mapping[str, LayerProfile]) -> float:
    """MACs per sample removed by pruning ``counts[name]`` weights of each layer (dense MACs x pruned fraction)."""
    return sum(profiles[name].macs * c / profiles[name].numel for name, c in counts.items() if profiles[name].numel)


def flops_equivalent_sparsity(
    allocator: object,
    layers: Sequence[PrunableLayer],
    flops_sparsity: float,
    constraints: Constraints,
    profiles: Mapping[str, LayerProfile],
    *,
    generator: torch.Generator | None = None,
) -> float:
    """The global weight sparsity at which ``allocator`` removes at least ``flops_sparsity`` of the dense MACs.

    ``profiles`` are the task's layer profiles (every Conv/Linear layer: their MACs sum to the dense FLOPs;
    layers not in ``layers`` stay dense). Raises PruningError naming the largest reachable FLOPs fraction
    when even the constraints' maximum allocation removes less.
    """
    layers = list(layers)
    total = sum(layer.numel for layer in layers)
    dense = float(sum(p.macs for p in profiles.values()))
    want = float(flops_sparsity) * dense
    caps = constraints.max_pruned(layers)
    top = sum(caps.values())

    def removed(k: int) -> float:
        counts = allocator.allocate(layers, k / total, constraints, generator=generator)  # type: ignore[attr-defined]
        return removed_macs(counts, profiles)

    most = removed(top) if top else 0.0
    if most < want - 1e-9:
        raise PruningError(
            f"a FLOPs target of {flops_sparsity:g} is beyond what '{getattr(allocator, 'name', allocator)}' can "
            f"remove under the constraints (at most {most / dense:.4f} of the dense FLOPs, pruning {top} of {total} "
            f"prunable weights); lower the target or relax the constraints"
        )
    lo, hi = 0, top
    while lo < hi:
        mid = (lo + hi) // 2
        if removed(mid) >= want - 1e-9:
            hi = mid
        else:
            lo = mid + 1
    return lo / total
