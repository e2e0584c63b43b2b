"""One baseline run on a task: prune (one-shot or gradual), fine-tune with the shared trainer, measure.

``run_baseline`` backs ``purl prune``; ``compare_cell`` is the method runner that
``purl compare`` resolves for every non-agent cell. Both start from a fresh copy
of the task's cached dense model, so every method sees the same weights.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from baselines.base import LayerCollapseWarning, get_allocator
from baselines.schedule import GradualPruner, make_gradual_schedule
from purl.config import MethodSpec
from purl.errors import PruningError
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


def compare_cell(
    task: Task, spec: MethodSpec, sparsity: float, seed: int, cell_dir: Path, progress: bool = False
) -> dict[str, Any]:
    """Method runner for ``purl compare``: one baseline cell as a results row."""
    row, _, _ = run_baseline(task, spec, sparsity, seed=seed, progress=progress)
    return row
