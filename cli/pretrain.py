"""``purl pretrain``: train (or load from cache) the task's dense model and report it."""

from __future__ import annotations

import argparse
import time

from purl.cli.common import add_common_arguments, config_from_args, finish, planned_output_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--retrain", action="store_true", help="ignore the cached dense model and train again")


def run(args: argparse.Namespace) -> int:
    from purl.runtime import resolve_device
    from purl.task import build_task

    config = config_from_args(args)
    device = resolve_device(config.device)
    out = planned_output_dir(args, config, "pretrain")
    start = time.perf_counter()
    task = build_task(config, device, progress=not args.quiet, retrain=args.retrain)
    params = sum(p.numel() for p in task.model.parameters())
    prunable = sum(layer.numel for layer in task.prunable_layers())
    flops = sum(p.macs for p in task.profiles.values())
    results = {
        "command": "pretrain",
        "dataset": config.data.name,
        "model": config.model.name,
        "seed": config.seed,
        "device": str(device),
        "test_top1": 100.0 * task.dense_test.top1,
        "test_top5": 100.0 * task.dense_test.top5,
        "params": params,
        "prunable_params": prunable,
        "dense_flops": flops,
        "train_samples": len(task.data.train),
        "val_samples": len(task.data.val),
        "test_samples": len(task.data.test),
        "pretrain_seconds": task.pretrain_seconds,
        "from_cache": task.from_cache,
        "checkpoint": str(task.dense_path),
        "wall_time_s": time.perf_counter() - start,
    }
    cached = " (from cache)" if task.from_cache else ""
    return finish(out, results, [
        f"{config.model.name} on {config.data.name}{cached}: test top-1 {results['test_top1']:.2f}%, "
        f"top-5 {results['test_top5']:.2f}%",
        f"params {params:,} (prunable {prunable:,}), dense FLOPs {flops:,} MACs/sample, "
        f"wall time {results['wall_time_s']:.1f}s",
        f"dense checkpoint: {task.dense_path}",
    ], config)
