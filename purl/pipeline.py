"""The shared tail of every pruning method: fine-tune the masked model, then measure it.

Every method (Global MP, the other allocators, an agent's policy) ends here, so
all of them get the same fine-tuning budget, data order and evaluation. The
returned dict is one row of results (accuracies in percent).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from purl.pruning import MaskState, pruning_stats
from purl.task import Task
from purl.training import evaluate, planned_steps, train

if TYPE_CHECKING:
    from purl.config import ExperimentConfig
    from purl.pruning.channels import ChannelGraph

#: chooses the channel indices each group loses for a keep plan: ``drop(graph, keep) -> {group: indices}``
ChannelDrop = Callable[["ChannelGraph", Mapping[str, int]], Mapping[str, "list[int]"]]


def measure(task: Task, model: nn.Module, *, prefix: str = "") -> dict[str, Any]:
    """Test top-1/top-5 (percent) of ``model`` on the task's test split."""
    acc = evaluate(model, task.loader("test"), device=task.device)
    return {f"{prefix}test_top1": 100.0 * acc.top1, f"{prefix}test_top5": 100.0 * acc.top5}


def measure_before_finetuning(task: Task, model: nn.Module) -> dict[str, Any]:
    """Test top-1/top-5 (percent) right after pruning, with BatchNorm statistics re-estimated first.

    A pruned network scored with the dense network's BatchNorm statistics sits near chance whatever its
    allocation, so the statistics are re-estimated on the reward's fixed train-split batches
    (``env.bn_recalibration_batches`` when it is a count > 0, else AUTO_BN_BATCHES), exactly as the reward
    does; the model's own statistics are put back afterwards, so fine-tuning starts from the same state for
    every method. Models without BatchNorm are scored as they are.
    """
    from purl.config import AUTO_BN_BATCHES
    from purl.evaluator import calibration_batches, has_batchnorm
    from purl.training import recalibrate_batchnorm

    if not has_batchnorm(model):
        return measure(task, model, prefix="before_")
    setting = task.config.env.bn_recalibration_batches
    n_batches = setting if isinstance(setting, int) and setting > 0 else AUTO_BN_BATCHES
    saved = {name: buf.detach().clone() for name, buf in model.named_buffers()}
    try:
        recalibrate_batchnorm(model, calibration_batches(task.data, task.device, n_batches,
                                                         task.config.data.batch_size))
        return measure(task, model, prefix="before_")
    finally:
        buffers = dict(model.named_buffers())
        for name, value in saved.items():
            buffers[name].copy_(value)


def _finetune(
    task: Task,
    model: nn.Module,
    masks: MaskState | None,
    *,
    seed: int,
    on_step: Callable[[int], None] | None,
    progress: bool,
    measure_before: bool,
) -> dict[str, Any]:
    """Accuracy before, fine-tuning with ``task.config.finetune`` (masks kept if any), accuracy after."""
    row: dict[str, Any] = {}
    if measure_before:
        row.update(measure_before_finetuning(task, model))
    loader = task.loader("train", seed=seed)
    steps = planned_steps(task.config.finetune, len(loader))
    start = time.perf_counter()
    train(model, loader, task.config.finetune, device=task.device, masks=masks, on_step=on_step,
          progress=progress, desc="finetune")
    row["finetune_steps"] = steps
    row["finetune_seconds"] = time.perf_counter() - start
    row.update(measure(task, model, prefix="after_"))
    row.update({"dense_test_top1": 100.0 * task.dense_test.top1, "dense_test_top5": 100.0 * task.dense_test.top5})
    return row


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
    row = _finetune(task, model, masks, seed=seed, on_step=on_step, progress=progress, measure_before=measure_before)
    stats = pruning_stats(task.profiles, masks.pruned())
    row.update({
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


def flops_budget_fields(row: dict[str, Any]) -> dict[str, Any]:
    """A weight-granularity row on a FLOPs budget (``budget_metric: flops``): the removed fraction of the dense
    FLOPs is the achieved target (``achieved_sparsity``); ``weight_sparsity`` keeps the weights' fraction."""
    return {"budget_metric": "flops", "weight_sparsity": row["achieved_sparsity"],
            "achieved_sparsity": 1.0 - row["sparse_flops"] / row["dense_flops"],
            "flops_ratio": row["sparse_flops"] / row["dense_flops"],
            "params_ratio": row["nonzero_params"] / row["total_params"]}


def slim_and_measure(
    task: Task,
    config: ExperimentConfig,
    plan: Callable[[ChannelGraph], Mapping[str, int]],
    *,
    seed: int,
    progress: bool = True,
    drop: ChannelDrop | None = None,
) -> tuple[dict[str, Any], nn.Module]:
    """The channel-granularity cell of every method: choose, slim, fine-tune, measure.

    :func:`slim_copy` with ``plan(graph)`` choosing the channels each group keeps (a channel allocator, or the
    agent's chosen plan), then :func:`finetune_and_measure_channels`. The row gains
    ``channel_norm``, ``channel_keep`` and ``channel_group_sizes``; returns it and the slimmed, fine-tuned model.
    """
    slim, keep, sizes = slim_copy(task, config, plan, drop)
    row = finetune_and_measure_channels(task, slim, task.example_input(), seed=seed,
                                        budget_metric=config.budget_metric(), progress=progress)
    row.update({"channel_norm": config.prune.channel_norm, "channel_keep": keep, "channel_group_sizes": sizes})
    return row, slim


def slim_copy(
    task: Task, config: ExperimentConfig, plan: Callable[[ChannelGraph], Mapping[str, int]],
    drop: ChannelDrop | None = None,
) -> tuple[nn.Module, dict[str, int], dict[str, int]]:
    """A physically slimmed copy of the dense model, not fine-tuned -> (model, channels kept per group, group sizes).

    Traces a fresh dense copy (groups touching a layer ``model.include``/``model.exclude`` keep out are left
    whole), lets ``plan(graph)`` choose the channels each group keeps and removes each group's
    lowest-``prune.channel_norm`` channels (:func:`~purl.pruning.channels.prune_channels`; ``drop(graph, keep)``
    chooses them instead when given, e.g. random pruning's draw). The first half of
    :func:`slim_and_measure`; ``env.prior: auto`` scores its channel candidates on it too.
    """
    import copy

    from purl.pruning.channels import channel_graph, prune_channels

    example = task.example_input()
    dense = copy.deepcopy(task.model)
    graph = channel_graph(dense, example, task.channel_ignored_layers())
    keep = dict(plan(graph))
    slim = prune_channels(dense, example, keep, norm=config.prune.channel_norm, graph=graph,
                          removed=drop(graph, keep) if drop is not None else None)
    return slim, keep, {group.name: group.size for group in graph.groups}


def finetune_and_measure_channels(
    task: Task,
    model: nn.Module,
    example_input: Tensor,
    *,
    seed: int,
    budget_metric: str,
    progress: bool = True,
) -> dict[str, Any]:
    """The channel-granularity tail: the same fine-tuning and evaluation as :func:`finetune_and_measure` on a
    physically slimmed ``model`` (no masks), with its size and MACs re-measured from the model itself.

    ``achieved_sparsity`` is the fraction of ``budget_metric`` (``params``: all parameters, ``flops``:
    Conv/Linear MACs per sample) removed relative to the task's dense model, so it compares with the
    target; ``params_ratio``/``flops_ratio`` are the kept fractions, ``layer_sparsity`` the fraction of each
    Conv/Linear layer's weights removed. Nothing collapses (every channel group keeps a channel).
    """
    from purl.pruning.channels import measure_model

    row = _finetune(task, model, None, seed=seed, on_step=None, progress=progress, measure_before=True)
    dense, slim = measure_model(task.model, example_input), measure_model(model, example_input)
    params_ratio, flops_ratio = slim.params / dense.params, slim.macs / dense.macs
    dense_modules, slim_modules = dict(task.model.named_modules()), dict(model.named_modules())
    layers = {name: 1.0 - slim_modules[name].weight.numel() / module.weight.numel()
              for name, module in dense_modules.items()
              if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) and name in slim_modules}
    row.update({
        "granularity": "channel",
        "budget_metric": budget_metric,
        "achieved_sparsity": 1.0 - (flops_ratio if budget_metric == "flops" else params_ratio),
        "params_ratio": params_ratio,
        "flops_ratio": flops_ratio,
        "nonzero_params": slim.params,
        "total_params": dense.params,
        "dense_flops": dense.macs,
        "sparse_flops": slim.macs,
        "compression_ratio": dense.params / slim.params,
        "theoretical_speedup": dense.macs / slim.macs,
        "collapsed_layers": [],
        "n_collapsed": 0,
        "near_collapsed_layers": [],
        "n_near_collapsed": 0,
        "layer_sparsity": layers,
    })
    return row
