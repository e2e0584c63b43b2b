"""One baseline run on a task: prune (one-shot or gradual), fine-tune with the shared trainer, measure.

:class:`BaselineMethod` is the :class:`purl.methods.Method` registered as ``baseline``: ``purl prune``
and every non-agent cell of ``purl compare`` run through it. It starts from a fresh copy of the
task's cached dense model, so every method sees the same weights.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from purl.baselines.base import Allocator, LayerCollapseWarning, get_allocator
from purl.baselines.channel import DEPRECATED_ALIASES, ChannelConstraints
from purl.baselines.flops_budget import flops_equivalent_sparsity
from purl.baselines.schedule import GradualPruner, make_gradual_schedule
from purl.config import ExperimentConfig, MethodSpec, merge_config
from purl.errors import PruningError
from purl.methods import METHODS, MethodCell, Pruned, PruningMethod, refuse_weight_threshold_at_channel
from purl.pipeline import finetune_and_measure, flops_budget_fields, slim_and_measure
from purl.pruning import MaskState
from purl.pruning.channels import ChannelGraph
from purl.pruning.constraints import Constraints
from purl.task import Task
from purl.training import planned_steps


def constraints_for(task: Task, spec: MethodSpec) -> Constraints:
    """The task's constraints, with the method's own Minimum Threshold when it sets one."""
    return Constraints.from_config(task.config.constraints, min_threshold=spec.min_threshold)


def run_baseline(
    task: Task, spec: MethodSpec, sparsity: float | None, *, seed: int, progress: bool = True,
    budget_metric: str = "params",
) -> tuple[dict[str, Any], nn.Module, MaskState]:
    """Prune a fresh copy of the dense model with ``spec`` at ``sparsity``, fine-tune, and measure it.

    One-shot: masks are computed once from the dense weights, then fine-tuning keeps them.
    Gradual: Zhu & Gupta's cubic schedule drives the allocator during fine-tuning (masks
    recomputed every ``prune.gradual_frequency`` steps) and ends exactly at ``sparsity``;
    there is no "before fine-tuning" accuracy then (reported as None). The ``layerwise``
    allocator applies its map as given (the achieved sparsity is the map's) unless its
    ``rescale`` option asks to scale the map to ``sparsity``.

    ``budget_metric="flops"`` (one-shot only): ``sparsity`` is the fraction of the dense FLOPs to remove; the
    allocator prunes at the weight sparsity that removes it (:func:`baselines.flops_budget.flops_equivalent_sparsity`),
    and the row's ``achieved_sparsity`` is the removed FLOPs fraction (``weight_sparsity`` the weights').
    """
    allocator = get_allocator(spec.method, **spec.kwargs)
    constraints = constraints_for(task, spec)
    generator = torch.Generator().manual_seed(seed)
    if allocator.accepts_no_target and not spec.kwargs.get("rescale", False):
        sparsity = None  # an explicit per-layer map is applied as given (rescale=true scales it to the target)
    with warnings.catch_warnings():
        warnings.simplefilter("once", LayerCollapseWarning)
        if spec.schedule == "gradual":
            if sparsity is None:
                raise PruningError("gradual pruning needs a global target; for layerwise set its option "
                                   "rescale=true (prune.method_kwargs.rescale=true)")
            cfg = task.config.prune
            steps = planned_steps(task.config.finetune, len(task.loader("train", seed=seed)))
            schedule = make_gradual_schedule(sparsity, steps, frequency=cfg.gradual_frequency,
                                             start_fraction=cfg.gradual_start, end_fraction=cfg.gradual_end)
            model, masks = task.fresh_copy()
            pruner = GradualPruner(allocator, masks, schedule, constraints, generator=generator)
            row = finetune_and_measure(task, model, masks, seed=seed, on_step=pruner, progress=progress,
                                       measure_before=False)
            row.update({"before_test_top1": None, "before_test_top5": None})
        else:
            model, masks = prune_oneshot(task, allocator, sparsity, constraints, budget_metric=budget_metric,
                                         generator=generator)
            row = finetune_and_measure(task, model, masks, seed=seed, progress=progress)
            if budget_metric == "flops" and sparsity is not None:
                row.update(flops_budget_fields(row))
    return row, model, masks


def prune_oneshot(
    task: Task, allocator: Allocator, sparsity: float | None, constraints: Constraints, *,
    budget_metric: str = "params", generator: torch.Generator | None = None,
) -> tuple[nn.Module, MaskState]:
    """A fresh dense copy pruned once by ``allocator`` at ``sparsity`` of ``budget_metric`` -> (model, masks).

    On a FLOPs budget the allocator prunes at the weight sparsity that removes that fraction of the dense MACs
    (:func:`baselines.flops_budget.flops_equivalent_sparsity`); ``sparsity=None`` applies a map allocator as
    given. The one-shot step of every baseline cell, and how ``env.prior: auto`` prunes its candidates.
    """
    model, masks = task.fresh_copy()
    if budget_metric == "flops" and sparsity is not None:
        sparsity = flops_equivalent_sparsity(allocator, masks.layers, sparsity, constraints, task.profiles,
                                             generator=generator)
    allocator.prune(masks, sparsity, constraints, generator=generator)
    return model, masks


def channel_plan(config: ExperimentConfig, method: str | Allocator, sparsity: float | None,
                 ) -> Callable[[ChannelGraph], dict[str, int]]:
    """The plan of allocator ``method``'s channel form (a name, or an allocator already built with its options)
    removing ``sparsity`` of ``prune.budget_metric`` under the config's channel constraints (for
    :func:`purl.pipeline.slim_and_measure` / :func:`purl.pipeline.slim_copy`). ``sparsity=None``: a map allocator's
    map as given (``layerwise`` also applies its map as given unless its ``rescale`` option is set)."""
    from purl.baselines.channel import get_channel_allocator

    cfg = config.prune
    allocator = get_channel_allocator(method)
    ratio = None if sparsity is None else 1.0 - float(sparsity)
    return lambda graph: allocator.keep_channels(graph, ratio, metric=cfg.budget_metric, norm=cfg.channel_norm,
                                                 constraints=ChannelConstraints.from_config(config))


def check_channel_request(config: ExperimentConfig, spec: MethodSpec) -> None:
    """What channel granularity cannot do, as one ConfigError line (before any work): an allocator without a
    channel form (its class's ``granularities``), a bad option, a gradual schedule, a weight Minimum Threshold."""
    from purl.baselines.channel import get_channel_allocator
    from purl.errors import ConfigError, RegistryError

    try:
        get_channel_allocator(spec.method, **spec.kwargs)  # e.g. uniform-plus: "no channel version"
    except (PruningError, RegistryError) as exc:
        raise ConfigError(f"method '{spec.label}': {exc}") from None
    if spec.schedule != "oneshot":
        raise ConfigError(f"method '{spec.label}': schedule '{spec.schedule}' is not supported at "
                          "prune.granularity=channel; use oneshot")
    refuse_weight_threshold_at_channel(config, spec)


def run_channel_baseline(
    task: Task, config: ExperimentConfig, spec: MethodSpec, sparsity: float, *, seed: int, progress: bool = True
) -> tuple[dict[str, Any], nn.Module]:
    """Channel granularity: remove ``sparsity`` of ``prune.budget_metric``, fine-tune the slimmed model, measure.

    The channel allocator ``spec.method`` turns the keep ratio ``1 - sparsity`` of the budget metric into
    channels per Torch-Pruning group (never above the budget, below it by less than one channel's cost);
    :func:`~purl.pruning.channels.prune_channels` removes the lowest-``prune.channel_norm`` channels of a
    fresh dense copy; then the shared fine-tuning and evaluation (:func:`purl.pipeline.slim_and_measure`, the
    agent's channel cells too).
    ``config`` is the cell's (its ``prune`` section: norm, metric, min_channels); fine-tuning is the task's.
    Returns the row (with ``channel_keep``: channels kept per group) and the slimmed, fine-tuned model. The
    request was validated once, by :meth:`BaselineMethod.validate` (:func:`check_channel_request`).
    """
    from purl.baselines.channel import get_channel_allocator

    allocator = get_channel_allocator(spec.method, **spec.kwargs)
    generator = torch.Generator().manual_seed(seed)  # random pruning's draw: the same for the same seed
    norm = config.prune.channel_norm

    def drop(graph: ChannelGraph, keep: dict[str, int]) -> dict[str, list[int]]:
        return allocator.drop_channels(graph, keep, norm=norm, generator=generator)

    return slim_and_measure(task, config, channel_plan(config, allocator, sparsity), seed=seed, progress=progress,
                            drop=drop)


class BaselineMethod(PruningMethod):
    """The :class:`purl.methods.PruningMethod` of every allocator (``global-mp``, ``uniform``, ``pkg.mod:Class``).

    ``spec.method`` names the allocator and ``spec.kwargs`` are its options (``prune.method_kwargs``);
    ``spec.schedule`` and ``spec.min_threshold`` the schedule and Minimum Threshold. Fine-tuning,
    constraints and the gradual window are the task's (the grid's) config.
    """

    def cell_config(self, base: ExperimentConfig, spec: MethodSpec, target_sparsity: float | None,
                    ) -> ExperimentConfig:
        """``base`` with ``prune.*`` set to this cell's allocator, options, schedule and target."""
        cli = [f"prune.method={json.dumps(spec.method)}", f"prune.schedule={spec.schedule}"]
        if target_sparsity is not None:
            cli.append(f"prune.sparsity={float(target_sparsity)!r}")
        return merge_config(base, cli_overrides=cli, method_overrides={"prune.method_kwargs": dict(spec.kwargs)}
                            if spec.kwargs else None, min_threshold=spec.min_threshold,
                            where=f"method '{spec.label}': ")

    def validate(self, config: ExperimentConfig, spec: MethodSpec) -> None:
        """An unknown allocator or option is one ConfigError listing what is allowed."""
        from purl.baselines.base import ALLOCATORS
        from purl.errors import ConfigError
        from purl.methods import METHODS

        if config.prune.granularity == "channel":
            check_channel_request(config, spec)
            return
        if spec.method in DEPRECATED_ALIASES:
            raise ConfigError(f"method '{spec.method}' removes whole channels: set prune.granularity=channel "
                              "(the current granularity is 'weight')")
        if spec.method not in ALLOCATORS and ":" not in spec.method:
            raise ConfigError(f"unknown method '{spec.method}' in compare.methods; allowed: "
                              f"{', '.join(n for n in METHODS.names() if n != 'baseline')}, "
                              f"{', '.join(ALLOCATORS.names())}")
        allocator = get_allocator(spec.method, **spec.kwargs)  # a bad option or an unimportable class: one line now
        if "weight" not in allocator.granularities:
            raise ConfigError(f"method '{spec.label}': allocator '{spec.method}' declares granularities "
                              f"{', '.join(allocator.granularities)}; set prune.granularity accordingly")

    def prune(self, cell: MethodCell) -> Pruned:
        """One baseline cell: :func:`run_baseline` on the task's fresh dense copy -> row, model, masks.

        At ``prune.granularity=channel`` (the cell config's) it is :func:`run_channel_baseline`: the model
        is the physically slimmed one and ``masks`` is None (there are none).
        """
        if cell.config.prune.granularity == "channel":
            if cell.target_sparsity is None:
                raise PruningError("channel pruning needs a target (prune.sparsity or compare.sparsities)")
            row, slim = run_channel_baseline(cell.task, cell.config, cell.spec, cell.target_sparsity,
                                             seed=cell.seed, progress=cell.progress)
            return Pruned(row, slim, None)  # no masks at channel granularity
        row, model, masks = run_baseline(cell.task, cell.spec, cell.target_sparsity, seed=cell.seed,
                                         progress=cell.progress, budget_metric=cell.config.prune.budget_metric)
        return Pruned(row, model, masks)

METHODS.add("baseline", BaselineMethod(), help="every allocator: prune the dense copy, fine-tune, measure")
