"""Binary weight masks applied by magnitude, kept through training, restorable in place.

Exactness contract: pruning a layer of ``n`` weights at sparsity ``s`` zeroes
exactly ``k = round(s * n)`` weights, the ``k`` smallest by ``|w|``; ties at the
threshold are broken by flat index (lower index pruned first), so the result is
deterministic and the count exact for every ``s`` in ``[0, 1]``.

Persistence contract: after :meth:`MaskState.attach` the gradient of every
pruned weight is zeroed by a tensor hook, and the mask is re-applied after every
``optimizer.step()`` by a step post-hook, so momentum, weight decay or Adam
state can never resurrect a pruned weight.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from purl.errors import PruningError
from purl.pruning.layers import PrunableLayer, find_prunable_layers


def pruned_count(sparsity: float, numel: int) -> int:
    """Number of weights pruned at ``sparsity``: ``round(sparsity * numel)``; validates the range."""
    if not 0.0 <= float(sparsity) <= 1.0:
        raise PruningError(f"sparsity must be in [0, 1], got {sparsity}")
    return int(round(float(sparsity) * numel))


def magnitude_mask(weight: Tensor, k: int) -> Tensor:
    """Boolean keep-mask of ``weight``'s shape with exactly its ``k`` smallest ``|w|`` set False.

    Ties at the threshold are pruned in increasing flat-index order. Runs in
    O(n) with one ``kthvalue`` (no full sort) on any device.
    """
    n = weight.numel()
    if not 0 <= k <= n:
        raise PruningError(f"cannot prune {k} of {n} weights")
    if k == 0:
        return torch.ones_like(weight, dtype=torch.bool)
    if k == n:
        return torch.zeros_like(weight, dtype=torch.bool)
    flat = weight.detach().abs().flatten()
    if flat.dtype in (torch.float16, torch.bfloat16):
        flat = flat.float()
    threshold = flat.kthvalue(k).values
    prune = flat < threshold
    missing = k - int(prune.sum())
    if missing > 0:
        ties = torch.nonzero(flat == threshold).squeeze(1)
        prune[ties[:missing]] = True
    return (~prune).view_as(weight)


class MaskState:
    """The masks of a model's prunable layers plus a snapshot of its dense state.

    ``MaskState(model)`` snapshots every parameter and buffer so that
    :meth:`restore` can bring the dense model back bit-exactly, in place, with
    no disk I/O (this is how an RL episode starts over).
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[PrunableLayer] | None = None,
        *,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
    ) -> None:
        self.model = model
        self.layers: list[PrunableLayer] = list(layers) if layers is not None else find_prunable_layers(
            model, include, exclude
        )
        self._by_name = {layer.name: layer for layer in self.layers}
        self.masks: dict[str, Tensor] = {
            layer.name: torch.ones_like(layer.weight, dtype=torch.bool) for layer in self.layers
        }
        self._dense: dict[str, Tensor] = {}
        self._handles: list[Any] = []
        self.snapshot()

    # ------------------------------------------------------------------ queries
    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def layer(self, name: str) -> PrunableLayer:
        try:
            return self._by_name[name]
        except KeyError:
            raise PruningError(f"'{name}' is not a prunable layer; layers: {', '.join(self.names)}") from None

    def numels(self) -> dict[str, int]:
        return {layer.name: layer.numel for layer in self.layers}

    def pruned(self) -> dict[str, int]:
        """Pruned-weight count per layer (from the masks)."""
        return {name: int(mask.numel() - mask.sum()) for name, mask in self.masks.items()}

    def sparsities(self) -> dict[str, float]:
        """Fraction of weights pruned per layer."""
        return {name: (mask.numel() - int(mask.sum())) / mask.numel() for name, mask in self.masks.items()}

    def global_sparsity(self) -> float:
        total = sum(m.numel() for m in self.masks.values())
        return sum(self.pruned().values()) / total

    # ---------------------------------------------------------------- mutation
    @torch.no_grad()
    def prune_layer(self, name: str, sparsity: float) -> Tensor:
        """Prune ``name`` to ``sparsity`` by magnitude of its *current* weights; return the new mask."""
        layer = self.layer(name)
        mask = magnitude_mask(layer.weight, pruned_count(sparsity, layer.numel))
        return self.set_mask(name, mask)

    def prune_layers(self, sparsities: Mapping[str, float]) -> None:
        """Prune every layer in ``sparsities`` (name -> sparsity) by magnitude."""
        for name, sparsity in sparsities.items():
            self.prune_layer(name, sparsity)

    @torch.no_grad()
    def set_mask(self, name: str, mask: Tensor) -> Tensor:
        """Install a boolean keep-mask for ``name`` and zero the pruned weights."""
        layer = self.layer(name)
        if mask.shape != layer.weight.shape:
            raise PruningError(
                f"mask shape {tuple(mask.shape)} != weight shape {tuple(layer.weight.shape)} of '{name}'"
            )
        # Always a private copy: masks are reset in place by restore(), which must not touch the caller's tensor.
        mask = mask.to(device=layer.weight.device, dtype=torch.bool, copy=True)
        self.masks[name] = mask
        layer.weight.mul_(mask)
        return mask

    @torch.no_grad()
    def apply(self, names: Iterable[str] | None = None) -> None:
        """Zero the pruned weights (all layers, or only ``names``)."""
        for name in self.names if names is None else names:
            self._by_name[name].weight.mul_(self.masks[name])

    def reset_masks(self) -> None:
        """All masks back to dense (weights untouched)."""
        for mask in self.masks.values():
            mask.fill_(True)

    # ---------------------------------------------------------- dense snapshot
    @torch.no_grad()
    def snapshot(self) -> None:
        """Remember the model's current parameters and buffers as the dense state."""
        self._dense = {k: v.detach().clone() for k, v in self.model.state_dict(keep_vars=True).items()}

    @torch.no_grad()
    def restore(self) -> None:
        """Bring back the snapshot bit-exactly, in place, and reset every mask to dense."""
        for key, value in self.model.state_dict(keep_vars=True).items():
            value.data.copy_(self._dense[key])
        self.reset_masks()

    # ------------------------------------------------------------- training
    def attach(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Mask gradients of pruned weights, and re-apply masks after each ``optimizer.step()``.

        Idempotent: calling again first removes the previous hooks.
        """
        self.detach()
        for layer in self.layers:
            name = layer.name
            self._handles.append(layer.weight.register_hook(lambda grad, n=name: grad * self.masks[n]))
        if optimizer is not None:
            self._handles.append(optimizer.register_step_post_hook(lambda *_: self.apply()))

    def detach(self) -> None:
        """Remove the hooks installed by :meth:`attach`."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def to(self, device: torch.device | str) -> MaskState:
        """Move masks and the dense snapshot to ``device`` (after ``model.to(device)``)."""
        self.masks = {k: v.to(device) for k, v in self.masks.items()}
        self._dense = {k: v.to(device) for k, v in self._dense.items()}
        return self

    def state_dict(self) -> dict[str, Tensor]:
        """Masks for checkpointing (CPU bool tensors)."""
        return {name: mask.detach().cpu().clone() for name, mask in self.masks.items()}

    def load_state_dict(self, masks: Mapping[str, Tensor]) -> None:
        """Install saved masks (names must match) and zero the pruned weights."""
        unknown = set(masks) - set(self.names)
        if unknown:
            raise PruningError(f"masks for unknown layers {sorted(unknown)}; layers: {', '.join(self.names)}")
        for name, mask in masks.items():
            self.set_mask(name, mask)
