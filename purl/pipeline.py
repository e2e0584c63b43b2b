"""The shared tail of every pruning method: fine-tune the masked model, then measure it.

Every method (Global MP, the other allocators, an agent's policy) ends here, so
all of them get the same fine-tuning budget, data order and evaluation. The
returned dict is one row of results (accuracies in percent).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from torch import nn

from purl.pruning import MaskState, pruning_stats
from purl.task import Task
from purl.training import evaluate, planned_steps, train


def measure(task: Task, model: nn.Module, masks: MaskState, *, prefix: str = "") -> dict[str, Any]:
    """Test top-1/top-5 (percent) of ``model`` on the task's test split."""
    acc = evaluate(model, task.loader("test"), device=task.device)
    return {f"{prefix}test_top1": 100.0 * acc.top1, f"{prefix}test_top5": 100.0 * acc.top5}


def finetune_and_measure(
    task: Task,
    model: nn.Module,
    masks: MaskState,
    *,
    seed: int,
    on_step: Callable[[int], None] | None = None,
    progress: bool = True,
    measure_before: bool = True,
) -> dict[str, Any]:
    """Evaluate, fine-tune with ``task.config.finetune`` (masks kept), evaluate again, add size/FLOPs stats.

    ``on_step`` (e.g. a gradual pruner) runs after every optimiser step. Keys of
    the result: test_top1/5 before and after (percent), dense test accuracy,
    pruning stats (achieved sparsity, per-layer sparsity, FLOPs, compression,
    speedup, collapsed layers) and fine-tuning steps/seconds.
    """
    row: dict[str, Any] = {}
    if measure_before:
        row.update(measure(task, model, masks, prefix="before_"))
    loader = task.loader("train", seed=seed)
    steps = planned_steps(task.config.finetune, len(loader))
    start = time.perf_counter()
    train(model, loader, task.config.finetune, device=task.device, masks=masks, on_step=on_step,
          progress=progress, desc="finetune")
    row["finetune_steps"] = steps
    row["finetune_seconds"] = time.perf_counter() - start
    row.update(measure(task, model, masks, prefix="after_"))
    stats = pruning_stats(task.profiles, masks.pruned())
    row.update({
        "dense_test_top1": 100.0 * task.dense_test.top1,
        "dense_test_top5": 100.0 * task.dense_test.top5,
        "achieved_sparsity": stats.global_sparsity,
        "nonzero_params": stats.nonzero_params,
        "total_params": stats.total_params,
        "dense_flops": stats.dense_flops,
        "sparse_flops": stats.sparse_flops,
        "compression_ratio": stats.compression_ratio,
        "theoretical_speedup": stats.theoretical_speedup,
        "collapsed_layers": stats.collapsed_layers,
        "n_collapsed": len(stats.collapsed_layers),
        "near_collapsed_layers": stats.near_collapsed_layers,
        "n_near_collapsed": len(stats.near_collapsed_layers),
        "layer_sparsity": stats.layer_sparsity,
    })
    return row
