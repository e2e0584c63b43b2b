"""``purl train``: train an RL pruning agent, apply its policy, fine-tune, report.

Writes to the output folder: ``config.yaml`` (resolved), ``tb/`` (TensorBoard),
``checkpoints/`` (last model, replay buffer, state), ``best_model.zip`` and
``best_episode.json``, ``episodes.csv``, ``pruned.pt`` (the pruned, fine-tuned
network with its masks) and ``results.json`` (the same row ``purl compare``
records for the agent). ``--resume`` continues an interrupted run from its
last checkpoint.
"""

from __future__ import annotations

import argparse

from purl.cli.common import add_common_arguments, config_from_args, finish, output_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--resume", action="store_true",
                        help="continue from <output>/checkpoints/last.zip (same --output) instead of starting over")


def run(args: argparse.Namespace) -> int:
    from agents import search_and_prune, validate_agent_config
    from purl.checkpoint import save_checkpoint
    from purl.runtime import resolve_device
    from purl.task import build_task

    config = config_from_args(args)
    spec = validate_agent_config(config)  # unknown algorithm / hyper-parameter: fail before any work
    device = resolve_device(config.device)
    out = output_dir(args, config, "train")
    task = build_task(config, device, progress=not args.quiet)
    outcome = search_and_prune(task, config, output_dir=out, seed=config.seed,
                               progress=not args.quiet and config.agent.progress_bar, resume=args.resume)
    row = {"command": "train", "dataset": config.data.name, "model": config.model.name, "device": str(device),
           **outcome.row}
    pruned = save_checkpoint(out / "pruned.pt", outcome.model, config=config.to_dict(),
                             masks=outcome.masks.state_dict(),
                             meta={k: row[k] for k in ("method", "algo", "target_sparsity", "achieved_sparsity",
                                                      "after_test_top1", "after_test_top5", "policy_source")})
    row["checkpoint"] = str(pruned)
    return finish(out, row, [
        f"{spec.name} agent ({config.env.action}, reward {config.env.reward}) on {config.model.name}/"
        f"{config.data.name}: target sparsity {config.env.target_sparsity:.4f}, "
        f"achieved {row['achieved_sparsity']:.4f} ({row['policy_source']} policy)",
        f"test top-1 {row['before_test_top1']:.2f}% before fine-tuning -> {row['after_test_top1']:.2f}% after "
        f"(dense {row['dense_test_top1']:.2f}%), FLOPs {row['sparse_flops']:,} / {row['dense_flops']:,}",
        f"search: {row['search_episodes']} episodes, {row['search_env_steps']} env steps, "
        f"{row['search_evaluations']} evaluations, {row['search_wall_time_s']:.1f}s; "
        f"total wall time {row['wall_time_s']:.1f}s",
        f"pruned checkpoint: {pruned}; TensorBoard: tensorboard --logdir {out / 'tb'}",
    ], config)
