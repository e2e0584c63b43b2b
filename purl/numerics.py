"""The one finiteness check of weights: which tensor first holds a NaN or an infinity.

Used where a dense model enters a run (:func:`purl.checkpoint.load_weights`, :func:`purl.task.build_task`)
and where the allocators read layer weights (:meth:`purl.baselines.Allocator.apply`), so a diverged or
damaged model is refused with one line naming the tensor instead of being pruned as if NaN were a magnitude.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class NonFinite:
    """The first non-finite tensor found: its name, how many of its values are NaN or inf, and its size."""

    name: str
    count: int
    numel: int

    def describe(self) -> str:
        return f"'{self.name}' holds {self.count} NaN or inf value(s) of {self.numel}"


def first_non_finite(tensors: Iterable[tuple[str, Tensor]]) -> NonFinite | None:
    """The first floating-point tensor of ``(name, tensor)`` pairs holding a NaN or inf, else None."""
    for name, tensor in tensors:
        if not (tensor.is_floating_point() or tensor.is_complex()):
            continue
        with torch.no_grad():
            finite = torch.isfinite(tensor.detach())
            if not bool(finite.all()):
                return NonFinite(name, int((~finite).sum()), tensor.numel())
    return None
