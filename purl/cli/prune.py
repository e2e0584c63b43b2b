"""``purl prune``: prune the cached dense model with one allocator, fine-tune it, report and save it."""

from __future__ import annotations

import argparse

from purl.cli.common import add_common_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--method", "-m", default=None,
                        help="allocator: global-mp, uniform, uniform-plus, erk, lamp, random, layerwise "
                             "(see `purl list methods`; default: config's prune.method)")
    parser.add_argument("--sparsity", "-s", type=float, default=None, help="target global sparsity in [0, 1]")
    parser.add_argument("--min-threshold", type=float, default=None,
                        help="Minimum Threshold: percent of all prunable weights each layer keeps (0.05 = 0.05%%)")
    parser.add_argument("--schedule", choices=["oneshot", "gradual"], default=None,
                        help="one-shot pruning before fine-tuning, or Zhu & Gupta's cubic gradual schedule during it")


def run(args: argparse.Namespace) -> int:
    import time

    from purl.checkpoint import save_checkpoint
    from purl.cli.common import config_from_args, finish, planned_output_dir
    from purl.config import MethodSpec
    from purl.errors import ConfigError
    from purl.methods import ALLOCATOR_METHOD, MethodCell, get_method, method_name
    from purl.runtime import resolve_device
    from purl.task import build_task

    flags = {"prune.method": args.method, "prune.sparsity": args.sparsity,
             "constraints.min_threshold": args.min_threshold, "prune.schedule": args.schedule}
    config = config_from_args(args, [f"{k}={v}" for k, v in flags.items() if v is not None])
    spec = MethodSpec(label=config.prune.method, method=config.prune.method, schedule=config.prune.schedule,
                      min_threshold=config.constraints.min_threshold, kwargs=config.prune.method_kwargs)
    from baselines import get_allocator

    get_allocator(spec.method, **spec.kwargs)  # unknown allocator or option: one line naming the allocators
    if method_name(spec.method) != ALLOCATOR_METHOD:
        raise ConfigError(f"purl prune runs an allocator; '{spec.method}' is a method of its own: use "
                          f"purl train (agent) or purl compare")
    method = get_method(spec.method)
    method.validate(config, spec)
    device = resolve_device(config.device)
    out = planned_output_dir(args, config, "prune")  # checked, created by the first write
    start = time.perf_counter()
    task = build_task(config, device, progress=not args.quiet)
    pruned = method.prune(MethodCell(task, config, spec, config.prune.sparsity, config.seed, out,
                                     progress=not args.quiet))
    row, model, masks = pruned.row, pruned.model, pruned.masks
    checkpoint = save_checkpoint(out / "pruned.pt", model, config=config.to_dict(), masks=masks.state_dict(),
                                 meta={"method": spec.method, "target_sparsity": config.prune.sparsity})
    results = {"command": "prune", "method": spec.method, "schedule": spec.schedule,
               "min_threshold": spec.min_threshold, "target_sparsity": config.prune.sparsity, **row,
               "wall_time_s": time.perf_counter() - start, "checkpoint": str(checkpoint)}
    collapsed = f", collapsed layers: {', '.join(row['collapsed_layers'])}" if row["collapsed_layers"] else ""
    return finish(out, results, [
        f"{spec.method} ({spec.schedule}) at {config.prune.sparsity:g}: achieved sparsity "
        f"{row['achieved_sparsity']:.4f}{collapsed}",
        (f"test top-1 {row['before_test_top1']:.2f}% after pruning -> " if row["before_test_top1"] is not None
         else "test top-1 (pruned gradually during fine-tuning) ")
        + f"{row['after_test_top1']:.2f}% after fine-tuning (dense {row['dense_test_top1']:.2f}%)",
        f"compression {row['compression_ratio']:.1f}x, theoretical speedup {row['theoretical_speedup']:.2f}x, "
        f"wall time {results['wall_time_s']:.1f}s",
        f"pruned checkpoint: {checkpoint}",
    ], config)
