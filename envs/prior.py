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

from collections.abc import Mapping, Sequence

from purl.errors import ConfigError, PruningError, RegistryError
from purl.pruning import LayerProfile, PrunableLayer
from purl.pruning.channels import ChannelGraph
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
    from purl.baselines import get_allocator
    from purl.baselines._alloc import round_to_total, water_fill

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


def flops_prior_counts(
    name: str,
    layers: Sequence[PrunableLayer],
    flops_sparsity: float,
    constraints: Constraints,
    caps: Sequence[int],
    profiles: Mapping[str, LayerProfile],
) -> list[int]:
    """The prior on a FLOPs budget: allocator ``name`` at the weight sparsity that removes ``flops_sparsity`` of
    the dense MACs (:func:`baselines.flops_budget.flops_equivalent_sparsity`, as the baselines do), fitted to
    ``caps`` like :func:`prior_counts`."""
    from purl.baselines import get_allocator
    from purl.baselines.flops_budget import flops_equivalent_sparsity

    try:
        sparsity = flops_equivalent_sparsity(get_allocator(name), layers, flops_sparsity, constraints, profiles)
    except (RegistryError, PruningError) as exc:
        raise ConfigError(f"env.prior '{name}': {exc}") from None
    total = sum(layer.numel for layer in layers)
    return prior_counts(name, layers, sparsity, constraints, caps, int(round(sparsity * total)))


#: env.prior names -> the channel allocator that computes the prior at prune.granularity channel
CHANNEL_PRIORS: dict[str, str] = {
    "global-mp": "channel-global-mp",
    "channel-global-mp": "channel-global-mp",
    "uniform": "channel-uniform",
    "channel-uniform": "channel-uniform",
}


def channel_prior_removed(
    name: str,
    graph: ChannelGraph,
    target_sparsity: float,
    metric: str,
    norm: str,
    min_channels: int,
    keep_dense: Sequence[str],
    caps: Sequence[int],
    multiple: int = 1,
) -> list[int]:
    """Channels each group of ``graph`` loses under channel allocator ``name`` (``env.prior``) removing
    ``target_sparsity`` of ``metric``, with the same channel constraints as the baselines, clipped to ``caps``."""
    from purl.baselines.channel import ChannelConstraints, get_channel_allocator

    if name not in CHANNEL_PRIORS:
        raise ConfigError(f"env.prior '{name}' has no channel version; at prune.granularity channel allowed: "
                          f"{', '.join(CHANNEL_PRIORS)}")
    try:
        keep = get_channel_allocator(CHANNEL_PRIORS[name])(
            graph, 1.0 - float(target_sparsity), metric=metric, norm=norm,
            constraints=ChannelConstraints(min_channels=min_channels, keep_dense=tuple(keep_dense),
                                           multiple=multiple))
    except PruningError as exc:
        raise ConfigError(f"env.prior '{name}': {exc}") from None
    return [min(g.size - int(keep[g.name]), int(cap)) for g, cap in zip(graph.groups, caps, strict=True)]
