"""Shared arithmetic of the layer-wise allocators: water-filling and exact integer rounding.

Every layer-wise allocator (uniform, Uniform+, ERK, rescaled layer-wise maps) is the same problem:
find one scalar ``c`` such that ``x_l = clip(c * w_l, lo_l, hi_l)`` sums to an integer ``total``
(``w_l`` are the allocator's per-layer weights, ``[lo_l, hi_l]`` the constraint bounds), then
round the real ``x_l`` to integers that still sum to ``total`` exactly and stay within bounds
(largest remainder, ties by layer order).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from purl.errors import PruningError


def water_fill(weights: Sequence[float], lo: Sequence[int], hi: Sequence[int], total: int) -> list[float]:
    """Real ``x_l = clip(c * weights_l, lo_l, hi_l)`` with ``sum(x) == total`` (``c >= 0`` solved exactly).

    Requires ``sum(lo) <= total <= sum(hi)`` and ``weights >= 0``. Layers with weight 0 sit at
    ``lo``. The solution is found on the sorted breakpoints of the piecewise-linear sum.
    """
    w = np.asarray(weights, dtype=np.float64)
    lo_a = np.asarray(lo, dtype=np.float64)
    hi_a = np.asarray(hi, dtype=np.float64)
    if len(w) == 0:
        if total:
            raise PruningError(f"cannot place {total} weights in zero layers")
        return []
    if np.any(w < 0) or not np.all(np.isfinite(w)):
        raise PruningError(f"allocation weights must be finite and non-negative, got {w.tolist()}")
    if np.any(lo_a > hi_a):
        raise PruningError("lower bound above upper bound in allocation")
    if total < lo_a.sum() - 1e-9 or total > hi_a.sum() + 1e-9:
        raise PruningError(f"cannot allocate {total} within bounds [{int(lo_a.sum())}, {int(hi_a.sum())}]")

    pos = w > 0
    if not pos.any():
        return lo_a.tolist()
    breaks = np.unique(np.concatenate([lo_a[pos] / w[pos], hi_a[pos] / w[pos], [0.0]]))
    values = np.clip(breaks[:, None] * w[None, :], lo_a[None, :], hi_a[None, :]).sum(axis=1)
    j = int(np.searchsorted(values, total, side="left"))
    if j >= len(breaks):
        c = float(breaks[-1])
    elif j == 0 or values[j] == total:
        c = float(breaks[j])
    else:
        c0, c1, f0, f1 = breaks[j - 1], breaks[j], values[j - 1], values[j]
        c = float(c0 + (total - f0) * (c1 - c0) / (f1 - f0))  # f is linear on [c0, c1]
    return np.clip(c * w, lo_a, hi_a).tolist()


def round_to_total(x: Sequence[float], lo: Sequence[int], hi: Sequence[int], total: int) -> list[int]:
    """Integers within ``[lo, hi]`` summing to ``total``, each ``floor(x)`` or ``ceil(x)`` where possible.

    Largest-remainder rounding: units go to the largest fractional parts first, ties to the
    earlier layer; surplus is taken from the smallest fractional parts, ties from the later layer.
    """
    n = len(x)
    base = [min(max(int(math.floor(v + 1e-9)), lo[i]), hi[i]) for i, v in enumerate(x)]
    rem = [x[i] - base[i] for i in range(n)]
    deficit = total - sum(base)
    while deficit > 0:
        order = sorted((i for i in range(n) if base[i] < hi[i]), key=lambda i: (-rem[i], i))
        if not order:
            raise PruningError(f"cannot allocate {total} weights within the per-layer bounds")
        for i in order[:deficit]:
            base[i] += 1
            rem[i] -= 1.0
        deficit = total - sum(base)
    while deficit < 0:
        order = sorted((i for i in range(n) if base[i] > lo[i]), key=lambda i: (rem[i], -i))
        if not order:
            raise PruningError(f"cannot allocate {total} weights within the per-layer bounds")
        for i in order[:-deficit]:
            base[i] -= 1
            rem[i] += 1.0
        deficit = total - sum(base)
    return base


def proportional_counts(weights: Sequence[float], lo: Sequence[int], hi: Sequence[int], total: int) -> list[int]:
    """Integer ``clip(c * weights, lo, hi)`` summing exactly to ``total`` (water-filling + rounding)."""
    return round_to_total(water_fill(weights, lo, hi, total), lo, hi, total)
