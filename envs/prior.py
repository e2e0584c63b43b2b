"""The prior allocation of the ``prior-relative`` action mode: a baseline's per-layer counts at the target.

The prior is computed once per environment by any registered allocator (``env.prior``: ``global-mp``
by default, ``erk``, ``lamp``, ``uniform``, ...) on the dense weights, under the same constraints as
every baseline (Minimum Threshold, ``keep_dense``), and then fitted to the environment's own per-layer
caps (:func:`envs.budget.layer_caps`: the action range and the no-collapse floor). Where the allocator
would take a layer below that floor (Global MP without MT at extreme sparsity), the excess is spread
over the other layers in proportion to their prior counts; everywhere else the prior is the
allocator's exact counts.

``env.prior: auto`` (:func:`choose_prior`) prunes the dense model with each of ``env.prior_candidates``
(Global MP with and without MT, ERK, LAMP, uniform by default) exactly as its baseline cell would, scores each
with the agent's re-ranking proxy on the reward split (:mod:`purl.proxy`), and makes the best one the prior:
the agent starts from the best baseline, not a fixed one.

``envs`` reaches the allocators through the ``baselines`` registry, imported here and only here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from purl.config import ExperimentConfig, MethodSpec
from purl.errors import ConfigError, PruningError, RegistryError
from purl.proxy import short_finetune
from purl.pruning import LayerProfile, PrunableLayer
from purl.pruning.channels import ChannelGraph
from purl.pruning.constraints import Constraints
from purl.task import Task


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
    except (RegistryError, PruningError, ConfigError) as exc:  # ConfigError: an allocator that needs options
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
    except (RegistryError, PruningError, ConfigError) as exc:
        raise ConfigError(f"env.prior '{name}': {exc}") from None
    total = sum(layer.numel for layer in layers)
    return prior_counts(name, layers, sparsity, constraints, caps, int(round(sparsity * total)))


def channel_priors() -> tuple[str, ...]:
    """The env.prior names with a channel form (the channel allocators, and their deprecated aliases)."""
    from purl.baselines.channel import DEPRECATED_ALIASES, channel_allocators

    return (*channel_allocators(), *DEPRECATED_ALIASES)


def channel_prior_removed(name: str, graph: ChannelGraph, config: ExperimentConfig, caps: Sequence[int]) -> list[int]:
    """Channels each group of ``graph`` loses under channel allocator ``name`` (``env.prior``) removing
    ``env.target_sparsity`` of the budget metric: the channel baseline's own plan (:func:`baselines.run.channel_plan`,
    the same channel constraints), clipped to ``caps``."""
    from purl.baselines.run import channel_plan

    if name not in channel_priors():
        raise ConfigError(f"env.prior '{name}' has no channel version; at prune.granularity channel allowed: "
                          f"{', '.join(channel_priors())}")
    try:
        keep = channel_plan(config, name, config.env.target_sparsity)(graph)
    except (PruningError, ConfigError) as exc:  # ConfigError: an allocator that needs options (layerwise's map)
        raise ConfigError(f"env.prior '{name}': {exc}") from None
    return [min(g.size - int(keep[g.name]), int(cap)) for g, cap in zip(graph.groups, caps, strict=True)]


# ---------------------------------------------------------------------------- env.prior: auto

#: the env.prior value that picks the best of env.prior_candidates by the re-ranking proxy
AUTO = "auto"


@dataclass(frozen=True)
class PriorChoice:
    """What ``env.prior: auto`` chose: the winner's label, allocator and Minimum Threshold, every candidate's
    proxy score (reward-split top-1 after the short fine-tune, by label; None for one that cannot reach the
    target under its constraints) and the seconds it took."""

    label: str
    method: str
    min_threshold: float | None
    scores: dict[str, float | None]
    seconds: float


def prior_candidates(config: ExperimentConfig) -> list[MethodSpec]:
    """``env.prior_candidates`` as MethodSpecs; at channel granularity the channel version of each (those
    without one are left out, duplicates once)."""
    specs = config.env.prior_specs()
    if config.prune.granularity != "channel":
        return specs
    from purl.baselines.channel import channel_allocator_name

    out: dict[str, MethodSpec] = {}
    for spec in specs:
        if spec.method not in channel_priors():
            continue
        channel = channel_allocator_name(spec.method)
        if channel not in out:  # a weight Minimum Threshold has no channel meaning: Global MP + MT is Global MP
            out[channel] = MethodSpec(label=channel, method=channel)
    if not out:
        raise ConfigError(f"env.prior 'auto': no env.prior_candidates entry has a channel version; at "
                          f"prune.granularity channel allowed: {', '.join(channel_priors())}")
    return list(out.values())


def choose_prior(task: Task, config: ExperimentConfig, seed: int) -> PriorChoice:
    """The best candidate of :func:`prior_candidates` on the reward split, by the agent's re-ranking proxy.

    Each candidate prunes a fresh dense copy at the env's target exactly as its baseline cell would (same
    constraints, its own Minimum Threshold, the FLOPs-equivalent weight sparsity on a FLOPs budget; at channel
    granularity the slimmed model), then :func:`purl.proxy.short_finetune` scores it (``agent.rerank_steps``
    steps, ``seed``, ``env.val_samples`` images). The highest score wins; a tie goes to the earlier candidate.
    A candidate that cannot reach the target under its constraints (an MT floor at extreme sparsity) sits out.
    Memoised on the task, so the envs of one search (and the agent's own resolution) pay once.
    """
    key = ("prior-choice", repr(config.env.prior_candidates), config.env.target_sparsity, config.budget_metric(),
           config.prune.granularity, config.agent.rerank_steps, config.env.val_samples, seed,
           repr(config.constraints), repr(config.prune))
    if key in task.memo:
        return task.memo[key]
    start = time.perf_counter()
    scores: dict[str, float | None] = {}
    specs, reasons = prior_candidates(config), []
    for spec in specs:
        try:
            model, masks = _prune_like_its_baseline(task, config, spec)
        except PruningError as exc:  # e.g. an MT floor that cannot reach this target: not a candidate here
            scores[spec.label] = None
            reasons.append(f"{spec.label}: {exc}")
            continue
        scores[spec.label] = short_finetune(task, model, masks, steps=config.agent.rerank_steps, seed=seed,
                                            val_samples=config.env.val_samples).top1
    feasible = [s for s in specs if scores[s.label] is not None]
    if not feasible:
        raise ConfigError(f"env.prior 'auto': no candidate reaches target {config.env.target_sparsity:g} "
                          f"({'; '.join(reasons)})")
    best = max(feasible, key=lambda s: scores[s.label])  # max keeps the first of equals
    choice = PriorChoice(best.label, best.method, best.min_threshold, scores, time.perf_counter() - start)
    task.memo[key] = choice
    return choice


def with_prior(config: ExperimentConfig, choice: PriorChoice | MethodSpec) -> ExperimentConfig:
    """``config`` with the chosen prior written in (``env.prior``, ``env.prior_min_threshold``): a choice of
    ``env.prior: auto``, or one of ``env.prior_candidates`` by its spec."""
    env = config.env.model_copy(update={"prior": choice.method, "prior_min_threshold": choice.min_threshold})
    return config.model_copy(update={"env": env})


def resolve_prior(task: Task, config: ExperimentConfig, seed: int) -> tuple[ExperimentConfig, PriorChoice | None]:
    """``config`` with ``env.prior: auto`` replaced by its choice (and the choice); unchanged (and None) when the
    prior is named or the action mode has none."""
    if config.env.prior != AUTO or config.env.action != "prior-relative":
        return config, None
    choice = choose_prior(task, config, seed)
    return with_prior(config, choice), choice


def _prune_like_its_baseline(task: Task, config: ExperimentConfig, spec: MethodSpec):
    """A fresh dense copy pruned by ``spec`` at the env's target, by its baseline cell's own one-shot step
    (:func:`baselines.run.prune_oneshot`; at channel granularity :func:`purl.pipeline.slim_copy`) -> (model, masks)."""
    from purl.baselines import get_allocator
    from purl.baselines.run import channel_plan, prune_oneshot

    target = float(config.env.target_sparsity)
    try:
        if config.prune.granularity == "channel":
            from purl.pipeline import slim_copy

            return slim_copy(task, config, channel_plan(config, spec.method, target))[0], None
        constraints = Constraints.from_config(config.constraints, min_threshold=spec.min_threshold)
        return prune_oneshot(task, get_allocator(spec.method), target, constraints,
                             budget_metric=config.budget_metric())
    except RegistryError as exc:
        raise ConfigError(f"env.prior 'auto', candidate '{spec.label}': {exc}") from None
