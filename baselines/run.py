"""One baseline run on a task: prune (one-shot or gradual), fine-tune with the shared trainer, measure.

:class:`BaselineMethod` is the :class:`purl.methods.Method` registered as ``baseline``: ``purl prune``
and every non-agent cell of ``purl compare`` run through it. It starts from a fresh copy of the
task's cached dense model, so every method sees the same weights.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import torch
from torch import nn

from baselines.base import LayerCollapseWarning, get_allocator
from baselines.schedule import GradualPruner, make_gradual_schedule
from purl.config import ExperimentConfig, MethodSpec, merge_config
from purl.errors import PruningError
from purl.methods import METHODS, MethodCell, Pruned
from purl.pipeline import finetune_and_measure
from purl.pruning import MaskState
from purl.pruning.constraints import Constraints
from purl.task import Task
from purl.training import planned_steps


def constraints_for(task: Task, spec: MethodSpec) -> Constraints:
    """The task's constraints, with the method's own Minimum Threshold when it sets one."""
    return Constraints.from_config(task.config.constraints, min_threshold=spec.min_threshold)


def run_baseline(
    task: Task, spec: MethodSpec, sparsity: float | None, *, seed: int, progress: bool = True
) -> tuple[dict[str, Any], nn.Module, MaskState]:
    """Prune a fresh copy of the dense model with ``spec`` at ``sparsity``, fine-tune, and measure it.

    One-shot: masks are computed once from the dense weights, then fine-tuning keeps them.
    Gradual: Zhu & Gupta's cubic schedule drives the allocator during fine-tuning (masks
    recomputed every ``prune.gradual_frequency`` steps) and ends exactly at ``sparsity``;
    there is no "before fine-tuning" accuracy then (reported as None). The ``layerwise``
    allocator applies its map as given (the achieved sparsity is the map's) unless its
    ``rescale`` option asks to scale the map to ``sparsity``.
    """
    model, masks = task.fresh_copy()
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
            pruner = GradualPruner(allocator, masks, schedule, constraints, generator=generator)
            row = finetune_and_measure(task, model, masks, seed=seed, on_step=pruner, progress=progress,
                                       measure_before=False)
            row.update({"before_test_top1": None, "before_test_top5": None})
        else:
            allocator.prune(masks, sparsity, constraints, generator=generator)
            row = finetune_and_measure(task, model, masks, seed=seed, progress=progress)
    return row, model, masks


class BaselineMethod:
    """The :class:`purl.methods.Method` of every allocator (``global-mp``, ``uniform``, ``pkg.mod:Class``...).

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
        from baselines.base import ALLOCATORS
        from purl.errors import ConfigError
        from purl.methods import METHODS

        if spec.method not in ALLOCATORS and ":" not in spec.method:
            raise ConfigError(f"unknown method '{spec.method}' in compare.methods; allowed: "
                              f"{', '.join(n for n in METHODS.names() if n != 'baseline')}, "
                              f"{', '.join(ALLOCATORS.names())}")
        get_allocator(spec.method, **spec.kwargs)  # a bad option or an unimportable class: one line now

    def prune(self, cell: MethodCell) -> Pruned:
        """One baseline cell: :func:`run_baseline` on the task's fresh dense copy -> row, model, masks."""
        row, model, masks = run_baseline(cell.task, cell.spec, cell.target_sparsity, seed=cell.seed,
                                         progress=cell.progress)
        return Pruned(row, model, masks)

    def run(self, cell: MethodCell) -> dict[str, Any]:
        """One baseline cell as a results row."""
        return self.prune(cell).row


METHODS.add("baseline", BaselineMethod(), help="every allocator: prune the dense copy, fine-tune, measure")
