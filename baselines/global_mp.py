"""Global Magnitude Pruning (Global MP), with the optional Minimum Threshold (MT).

Reference: M. Gupta et al., "Is Complexity Required for Neural Network Pruning? A Case Study on
Global Magnitude Pruning", arXiv:2209.14624, 2022 (reference code: github.com/manasgupta-1/GlobalMP).

Vanilla Global MP prunes the ``k = round(s * total)`` weights of smallest ``|w|`` over all prunable
layers at once -- one magnitude threshold for the whole network. The count is exact: weights tied
at the threshold are pruned in layer order, then by increasing flat index. Wherever magnitudes are
not tied the masks equal ``torch.nn.utils.prune.global_unstructured(..., L1Unstructured, amount=s)``.

At extreme sparsity vanilla Global MP can prune a whole (small, low-magnitude) layer; this is kept
possible (it is the method), detected, reported in ``PruningResult.collapsed`` and warned about
(:class:`~baselines.base.LayerCollapseWarning`).

MT (``Constraints(min_threshold=...)``, a percentage of all prunable weights) makes every layer keep
at least ``int(total * MT / 100)`` weights (smaller layers stay dense). Layers whose share at the
global threshold would break that floor are clamped to it and the threshold is recomputed on the
other layers for the remaining budget, until the target is met exactly. This realises the paper's
intent -- clamp the offending layers, push the sparsity they cannot take onto the others -- with a
single magnitude threshold over the unclamped layers and an exact count. (The reference script
instead multiplies the unclamped layers' sparsities by a common factor, which is not one global
threshold and is exact only up to rounding; the per-layer results differ slightly.)

Speed: the threshold is found without sorting or ``kthvalue``-ing the concatenated weights
(see :mod:`baselines._select`; ~10 elementwise passes, 60x faster than torch's ``global_unstructured``
on ResNet-50), and the weights are zeroed with one fused in-place ``hardshrink`` per layer (a plain
mask multiply only for layers where some weights tied with the threshold are kept). Non-finite
weights are refused (one PruningError naming the layer, as by every allocator). On CPU the call runs
with one thread when a busy process occupies the spare cores (or the model is small), which keeps it
fast on a shared machine; see :func:`baselines._select.cpu_threads`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from purl.baselines._select import AbsKeys, Cut, cpu_threads, select_smallest, select_with_caps
from purl.baselines.base import (
    Allocator,
    PruningResult,
    check_finite_weights,
    filter_layers,
    register_allocator,
)
from purl.baselines.channel import channel_global_mp
from purl.errors import PruningError
from purl.pruning.constraints import Constraints
from purl.pruning.layers import PrunableLayer, find_prunable_layers
from purl.pruning.masks import MaskState

__all__ = ["GlobalMagnitude", "global_magnitude_prune"]

_SHRINK_DTYPES = (torch.float32, torch.float64)


@register_allocator("global-mp")
class GlobalMagnitude(Allocator):
    """Global MP: one |w| threshold over all prunable weights (Gupta et al. 2022); MT via constraints."""

    granularities = ("weight", "channel")
    channel_form = staticmethod(channel_global_mp)  # its channel form (baselines/channel.py)

    def _plan(
        self, layers: Sequence[PrunableLayer], sparsity: float | None, constraints: Constraints
    ) -> tuple[list[Cut], AbsKeys]:
        k = self.target(layers, sparsity, constraints)
        src = AbsKeys([layer.weight for layer in layers])
        ids = list(range(len(layers)))
        if constraints.unconstrained:
            cuts = select_smallest(src, ids, k)
        else:
            caps = constraints.max_pruned(layers)
            cuts = select_with_caps(src, ids, k, [caps[layer.name] for layer in layers])
        return [cuts[i] for i in ids], src

    def allocate(
        self,
        layers: Sequence[PrunableLayer],
        sparsity: float | None,
        constraints: Constraints = Constraints(),
        *,
        generator: torch.Generator | None = None,
    ) -> dict[str, int]:
        cuts, _ = self._plan(layers, sparsity, constraints)
        return {layer.name: cut.count for layer, cut in zip(layers, cuts, strict=True)}

    @torch.no_grad()
    def apply(
        self,
        layers: Sequence[PrunableLayer],
        sparsity: float | None,
        constraints: Constraints = Constraints(),
        *,
        masks: MaskState | None = None,
        generator: torch.Generator | None = None,
    ) -> PruningResult:
        """Fast path: threshold selection, then masks built (or weights zeroed) straight from the cuts."""
        layers = list(layers)
        check_finite_weights(layers, self.name)  # this fast path bypasses Allocator.apply
        # one thread choice for the whole call (selection and zeroing): see baselines._select.cpu_threads
        with cpu_threads(sum(layer.numel for layer in layers)):
            return self._apply(layers, sparsity, constraints, masks)

    def _apply(
        self,
        layers: list[PrunableLayer],
        sparsity: float | None,
        constraints: Constraints,
        masks: MaskState | None,
    ) -> PruningResult:
        cuts, src = self._plan(layers, sparsity, constraints)
        counts = {layer.name: cut.count for layer, cut in zip(layers, cuts, strict=True)}
        for j, (layer, cut) in enumerate(zip(layers, cuts, strict=True)):
            w = layer.weight.detach()
            if masks is not None:
                if cut.count in (0, cut.numel):
                    keep = torch.full(w.shape, cut.count == 0, dtype=torch.bool, device=w.device)
                else:
                    keep = cut.keep_mask(src.full(j)).view(w.shape)
                masks.set_mask(layer.name, keep)
            elif cut.count == cut.numel:
                w.zero_()
            elif cut.count == 0:
                continue
            elif not cut.partial_ties and w.dtype in _SHRINK_DTYPES and w.dtype == src.dtype:
                torch.hardshrink(w, cut.threshold, out=w)  # zeroes exactly |w| <= threshold, in place
            else:
                w.masked_fill_(~cut.keep_mask(src.full(j)).view(w.shape), 0)
        unclamped = [c.threshold for c, layer in zip(cuts, layers, strict=True) if 0 < c.count < c.numel]
        info = {"threshold": max(unclamped)} if unclamped and constraints.unconstrained else {}
        return self.result(layers, counts, info)


def global_magnitude_prune(
    model: nn.Module,
    sparsity: float,
    min_threshold: float | None = None,
    *,
    min_weights: int | None = None,
    keep_dense: Sequence[str] = (),
    max_sparsity: float = 1.0,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    masks: MaskState | None = None,
) -> PruningResult:
    """Prune ``model`` in place by Global MP to global ``sparsity``; return per-layer sparsities.

    ``min_threshold`` is the MT in percent of all prunable weights (``0.05`` = 0.05 %), or give
    ``min_weights`` as a count. ``include``/``exclude`` select prunable layers (fnmatch on names).
    With ``masks``, the masks are installed in that :class:`MaskState` (which must wrap ``model``;
    its layers are further filtered by ``include``/``exclude``) so they persist through training.
    The returned dict is a :class:`~baselines.base.PruningResult` (``.counts``, ``.collapsed``).
    """
    constraints = Constraints(min_threshold, min_weights, tuple(keep_dense) if not isinstance(keep_dense, str)
                              else (keep_dense,), max_sparsity)
    if masks is not None:
        if masks.model is not model:
            raise PruningError("masks (MaskState) wraps a different model than the one given")
        layers = filter_layers(masks.layers, include, exclude)
    else:
        layers = find_prunable_layers(model, include, exclude)
    return GlobalMagnitude().apply(layers, sparsity, constraints, masks=masks)
