"""Erdős–Rényi-Kernel (ERK) layer-wise sparsity, with magnitude pruning inside each layer.

Reference: U. Evci, T. Gale, J. Menick, P. S. Castro and E. Elsen, "Rigging the Lottery: Making All
Tickets Winners" (RigL), ICML 2020; reference algorithm ``get_sparsities_erdos_renyi`` in
github.com/google-research/rigl (``rigl/sparse_utils.py``).

Layer ``l`` with weight shape ``(d_1, ..., d_m)`` gets density ``eps * (sum(d) / prod(d)) ** power``
(for a ``Linear`` this is the Erdős–Rényi ``(n_in + n_out) / (n_in * n_out)``; for a convolution the
kernel dimensions are included, hence "Kernel"), where ``eps`` makes the kept weights total exactly
``total - round(s * total)``. A layer whose density would exceed 1 is made dense and ``eps`` is
recomputed on the rest -- RigL iterates this one layer at a time; the fixed point is the same as
solving ``keep_l = min(n_l, eps * p_l * n_l)`` directly, which is what :func:`water_fill` does
(and constraint floors become lower bounds on ``keep_l``). Real counts are then rounded by largest
remainder so the total is exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from purl.baselines._alloc import proportional_counts, water_fill
from purl.baselines.base import Allocator, register_allocator
from purl.baselines.channel import channel_erk
from purl.errors import ConfigError
from purl.pruning.constraints import Constraints
from purl.pruning.layers import PrunableLayer

__all__ = ["ERK", "erk_raw_density"]


def erk_raw_density(shape: Sequence[int], power_scale: float = 1.0) -> float:
    """RigL's raw (unscaled) ERK density of a weight of ``shape``: ``(sum(shape) / prod(shape)) ** power_scale``."""
    return (sum(shape) / math.prod(shape)) ** power_scale


@register_allocator("erk")
class ERK(Allocator):
    """ERK: density proportional to (sum of dims)/(product of dims), as in RigL (Evci et al. 2020)."""

    granularities = ("weight", "channel")
    channel_form = staticmethod(channel_erk)  # its channel form (baselines/channel.py)

    def __init__(self, power_scale: float = 1.0) -> None:
        if not (isinstance(power_scale, (int, float)) and math.isfinite(power_scale) and power_scale >= 0):
            raise ConfigError(f"ERK power_scale must be a finite number >= 0, got {power_scale!r}")
        self.power_scale = float(power_scale)

    def _problem(
        self, layers: Sequence[PrunableLayer], sparsity: float | None, constraints: Constraints
    ) -> tuple[list[float], list[int], list[int], int]:
        caps = constraints.max_pruned(layers)
        k = self.target(layers, sparsity, constraints, caps)
        n = [layer.numel for layer in layers]
        weights = [erk_raw_density(tuple(layer.weight.shape), self.power_scale) * m for layer, m in zip(layers, n,
                                                                                                     strict=True)]
        lo = [m - caps[layer.name] for layer, m in zip(layers, n, strict=True)]
        return weights, lo, n, sum(n) - k

    def densities(
        self, layers: Sequence[PrunableLayer], sparsity: float, constraints: Constraints = Constraints()
    ) -> dict[str, float]:
        """Real-valued ERK densities (before rounding to whole weights)."""
        weights, lo, hi, keep = self._problem(layers, sparsity, constraints)
        kept = water_fill(weights, lo, hi, keep)
        return {layer.name: kept[j] / layer.numel for j, layer in enumerate(layers)}

    def allocate(
        self,
        layers: Sequence[PrunableLayer],
        sparsity: float | None,
        constraints: Constraints = Constraints(),
        *,
        generator: torch.Generator | None = None,
    ) -> dict[str, int]:
        weights, lo, hi, keep = self._problem(layers, sparsity, constraints)
        kept = proportional_counts(weights, lo, hi, keep)
        return {layer.name: layer.numel - kept[j] for j, layer in enumerate(layers)}

    def channel_options(self) -> dict[str, float]:
        """``power_scale`` shapes the channel form's ERK factors too."""
        return {"power_scale": self.power_scale}

    def __repr__(self) -> str:
        return f"ERK(power_scale={self.power_scale})"
