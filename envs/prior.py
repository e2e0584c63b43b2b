"""The prior allocation of the ``prior-relative`` action mode: a baseline's per-layer counts at the target.

The prior is computed once per environment by any registered allocator (``env.prior``: ``global-mp``
by default, ``erk``, ``lamp``, ``uniform``, ...) on the dense weights, under the same constraints as
every baseline (Minimum Threshold, ``keep_dense``), and then fitted to the environment's own per-layer
caps (:func:`envs.budget.layer_caps`: the action range and the no-collapse floor). Where the allocator
would take a layer below that floor (Global MP without MT at extreme sparsity), the excess is spread
over the other layers in proportion to their prior counts; everywhere else the prior is the
allocator's exact counts.

``envs`` reaches the allocators through the ``baselines`` registry, imported here and only here.
"""

from __future__ import annotations

from collections.abc import Sequence

from purl.errors import ConfigError, PruningError, RegistryError
from purl.pruning import PrunableLayer
from purl.pruning.constraints import Constraints


def prior_counts(
    name: str,
    layers: Sequence[PrunableLayer],
    target_sparsity: float,
    constraints: Constraints,
    caps: Sequence[int],
    target_count: int,
) -> list[int]:
    """Pruned count per layer of allocator ``name`` at ``target_sparsity``, summing to ``target_count``
    and within ``caps``."""
    from baselines import get_allocator
    from baselines._alloc import round_to_total, water_fill

    try:
        allocator = get_allocator(name)
        counts = allocator.allocate(layers, target_sparsity, constraints)
    except (RegistryError, PruningError) as exc:
        raise ConfigError(f"env.prior '{name}': {exc}") from None
    prior = [int(counts[layer.name]) for layer in layers]
    if sum(prior) == target_count and all(c <= cap for c, cap in zip(prior, caps, strict=True)):
        return prior
    zeros = [0] * len(prior)
    try:
        spread = water_fill([float(c) for c in prior], zeros, list(caps), target_count)
        return round_to_total(spread, zeros, list(caps), target_count)
    except PruningError as exc:
        raise ConfigError(f"env.prior '{name}' cannot be fitted to the env's per-layer caps: {exc}") from None
