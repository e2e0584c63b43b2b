"""``purl prune``: prune the cached dense model with one allocator, fine-tune it, report and save it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from purl.cli.common import add_common_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--method", "-m", default=None,
                        help="allocator (`purl list methods` lists them and which have a channel form, used at "
                             "prune.granularity=channel; default: config's prune.method)")
    parser.add_argument("--sparsity", "-s", type=float, default=None,
                        help="target global sparsity in [0, 1); at prune.granularity=channel the fraction of "
                             "prune.budget_metric (params or flops) removed")
    parser.add_argument("--min-threshold", type=float, default=None,
                        help="Minimum Threshold: percent of all prunable weights each layer keeps (0.05 = 0.05%%)")
    parser.add_argument("--schedule", choices=["oneshot", "gradual"], default=None,
                        help="one-shot pruning before fine-tuning, or Zhu & Gupta's cubic gradual schedule during it")


def run(args: argparse.Namespace) -> int:
    """One allocator at one target: a one-cell grid (:func:`purl.compare.runner.run_one_cell`: the compare cell's
    row, also in ``results.csv``), then ``pruned.pt`` and its exports, ``results.json`` and the printed summary."""
    import time

    from purl.cli.common import config_from_args, export_line, finish, planned_output_dir
    from purl.compare.runner import run_one_cell
    from purl.config import CHANNEL_ALIASES, MethodSpec
    from purl.errors import ConfigError
    from purl.methods import ALLOCATOR_METHOD, get_method, method_name, save_pruned
    from purl.runtime import resolve_device
    from purl.task import build_task

    flags = {"prune.method": args.method, "prune.sparsity": args.sparsity,
             "constraints.min_threshold": args.min_threshold, "prune.schedule": args.schedule}
    config = config_from_args(args, [f"{k}={v}" for k, v in flags.items() if v is not None])
    spec = MethodSpec(label=config.prune.method, method=config.prune.method, schedule=config.prune.schedule,
                      min_threshold=config.constraints.min_threshold, kwargs=config.prune.method_kwargs)
    channel = config.prune.granularity == "channel"
    if not channel and spec.method not in CHANNEL_ALIASES:  # a channel-only name: validate() says what to set
        from purl.baselines import get_allocator

        get_allocator(spec.method, **spec.kwargs)  # unknown allocator or option: one line naming the allocators
    if method_name(spec.method) != ALLOCATOR_METHOD:
        raise ConfigError(f"purl prune runs an allocator; '{spec.method}' is a method of its own: use "
                          f"purl train (agent) or purl compare")
    method = get_method(spec.method)
    method.validate(config, spec)  # at channel granularity: a channel allocator, oneshot, no weight MT
    device = resolve_device(config.device)
    out = planned_output_dir(args, config, "prune")  # checked, created by the first write
    start = time.perf_counter()
    task = build_task(config, device, progress=not args.quiet)
    row, pruned = run_one_cell(task, config, spec, config.prune.sparsity, config.seed, out, progress=not args.quiet)
    if channel:
        return _finish_channel(args, config, spec, task, row, pruned, out, start)
    saved = save_pruned(out, config, pruned, task.data.input_shape,  # the masked dense model: NOT faster
                        {"method": spec.method, "target_sparsity": config.prune.sparsity})
    results = {"command": "prune", "method": spec.method, "schedule": spec.schedule,
               "min_threshold": spec.min_threshold, "target_sparsity": config.prune.sparsity, **row,
               "wall_time_s": time.perf_counter() - start, **saved}
    collapsed = f", collapsed layers: {', '.join(row['collapsed_layers'])}" if row["collapsed_layers"] else ""
    return finish(out, results, [
        (f"{spec.method} ({spec.schedule}) removing {config.prune.sparsity:g} of the FLOPs: achieved "
         f"{row['achieved_sparsity']:.4f} (weight sparsity {row['weight_sparsity']:.4f}){collapsed}"
         if row.get("budget_metric") == "flops" else
         f"{spec.method} ({spec.schedule}) at {config.prune.sparsity:g}: achieved sparsity "
         f"{row['achieved_sparsity']:.4f}{collapsed}"),
        (f"test top-1 {row['before_test_top1']:.2f}% after pruning -> " if row["before_test_top1"] is not None
         else "test top-1 (pruned gradually during fine-tuning) ")
        + f"{row['after_test_top1']:.2f}% after fine-tuning (dense {row['dense_test_top1']:.2f}%)",
        f"compression {row['compression_ratio']:.1f}x, theoretical speedup {row['theoretical_speedup']:.2f}x, "
        f"wall time {results['wall_time_s']:.1f}s",
        f"pruned checkpoint: {saved['checkpoint']}",
        export_line(saved, 'weight'),
    ], config)


def _finish_channel(args: argparse.Namespace, config: Any, spec: Any, task: Any, row: dict[str, Any],
                    pruned: Any, out: Path, start: float) -> int:
    """Channel granularity: save the slimmed model (:func:`purl.methods.save_pruned`: checkpoint with the keep
    plan, .pt2, .onnx), time it (``prune.measure_latency``: CPU eager, batch 1 and 64, medians of interleaved
    runs, ratio = slimmed / dense), write results.json."""
    import copy
    import time

    from purl.cli.common import export_line, finish
    from purl.methods import save_pruned

    metric = config.prune.budget_metric
    saved = save_pruned(out, config, pruned, task.data.input_shape,
                        {"method": spec.method, "target_sparsity": config.prune.sparsity})
    latency: dict[str, Any] = {}
    if config.prune.measure_latency:
        from purl.latency import latency_ratios

        slim_cpu = copy.deepcopy(pruned.model).cpu().eval()
        for r in latency_ratios(task.model, slim_cpu, task.data.input_shape, batches=(1, 64)):
            latency[f"latency_ratio_b{r.batch}"] = r.ratio
            latency[f"latency_dense_ms_b{r.batch}"] = r.dense_ms
            latency[f"latency_pruned_ms_b{r.batch}"] = r.pruned_ms
        latency["latency_ratio"] = latency["latency_ratio_b1"]
        latency["latency_note"] = ("CPU, PyTorch eager, torch threads as configured, medians of 20 interleaved "
                                   "runs; ratio = slimmed / dense latency (noisy on a busy machine)")
    results = {"command": "prune", "method": spec.method, "schedule": spec.schedule, "granularity": "channel",
               "budget_metric": metric, "target_sparsity": config.prune.sparsity,
               "target_keep_ratio": 1.0 - config.prune.sparsity, **row, **latency,
               "wall_time_s": time.perf_counter() - start, **saved}
    kept = row["flops_ratio"] if metric == "flops" else row["params_ratio"]
    timing = (f", measured CPU latency ratio {latency['latency_ratio_b1']:.2f} (batch 1) / "
              f"{latency['latency_ratio_b64']:.2f} (batch 64)" if latency else "")
    return finish(out, results, [
        f"{spec.method} (channels, {row['channel_norm']}) removing {config.prune.sparsity:g} of the {metric}: kept "
        f"{kept:.4f} of the dense {metric} (params {row['params_ratio']:.4f}, FLOPs {row['flops_ratio']:.4f})",
        f"test top-1 {row['before_test_top1']:.2f}% after pruning -> {row['after_test_top1']:.2f}% after "
        f"fine-tuning (dense {row['dense_test_top1']:.2f}%)",
        f"params {row['nonzero_params']:,} of {row['total_params']:,}, MACs {row['sparse_flops']:,} of "
        f"{row['dense_flops']:,}{timing}, wall time {results['wall_time_s']:.1f}s",
        f"slimmed model: {saved['checkpoint']}",
        export_line(saved, "channel"),
    ], config)
