"""Uniform+: uniform magnitude pruning with the first layer dense and the last layer at most 80 % sparse.

Reference: T. Gale, E. Elsen and S. Hooker, "The State of Sparsity in Deep Neural Networks",
arXiv:1902.09574, 2019 (the "Uniform+" name is from Lee et al., LAMP, ICLR 2021).

"First" and "last" are the first and last prunable layers in forward-definition order (for a
ResNet: the stem convolution and the classifier). All other layers share one sparsity, raised so
that the global count is exactly ``round(s * total)``; user constraints still apply on top.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from purl.baselines.base import Allocator, register_allocator
from purl.baselines.uniform import uniform_counts
from purl.errors import ConfigError
from purl.pruning.constraints import Constraints, floor_count
from purl.pruning.layers import PrunableLayer

__all__ = ["UniformPlus"]


@register_allocator("uniform-plus")
class UniformPlus(Allocator):
    """Uniform+: first layer dense, last layer <= 80% sparse, the rest uniform (Gale et al. 2019)."""

    def __init__(self, first_dense: bool = True, last_max_sparsity: float = 0.8) -> None:
        if not 0.0 <= float(last_max_sparsity) <= 1.0:
            raise ConfigError(f"last_max_sparsity must be in [0, 1], got {last_max_sparsity}")
        self.first_dense = bool(first_dense)
        self.last_max_sparsity = float(last_max_sparsity)

    def caps(self, layers: Sequence[PrunableLayer], constraints: Constraints) -> dict[str, int]:
        """Per-layer maximum pruned counts: the constraints' caps plus the Uniform+ rules."""
        caps = constraints.max_pruned(layers)
        last = layers[-1]
        caps[last.name] = min(caps[last.name], floor_count(self.last_max_sparsity, last.numel))
        if self.first_dense:
            caps[layers[0].name] = 0
        return caps

    def allocate(
        self,
        layers: Sequence[PrunableLayer],
        sparsity: float | None,
        constraints: Constraints = Constraints(),
        *,
        generator: torch.Generator | None = None,
    ) -> dict[str, int]:
        caps = self.caps(layers, constraints)
        rules = (
            f"the uniform-plus rules (first layer dense={self.first_dense}, "
            f"last layer <= {self.last_max_sparsity:g})"
        )
        return uniform_counts(layers, self.target(layers, sparsity, constraints, caps, rules), caps)

    def __repr__(self) -> str:
        return f"UniformPlus(first_dense={self.first_dense}, last_max_sparsity={self.last_max_sparsity})"
