"""``purl train``: train an RL pruning agent, apply its policy, fine-tune, report; or sweep it.

Single run (no ``--seeds``/``--grid``). Writes to the output folder: ``config.yaml``
(resolved), ``tb/`` (TensorBoard), ``checkpoints/`` (last model, replay buffer, state),
``best_model.zip`` and ``best_episode.json``, ``episodes.csv``, ``pruned.pt`` (the pruned,
fine-tuned network with its masks) and ``results.json`` (the same row ``purl compare``
records for the agent). ``--resume`` continues an interrupted run (Ctrl-C, SIGTERM, a kill) from its last
checkpoint, exactly: it ends with the numbers of an uninterrupted run (:mod:`agents.resume`; a checkpoint that
cannot be resumed exactly restarts the search from scratch, saying so); it
refuses (one line, exit 2, before any work, nothing overwritten) a folder without a checkpoint, a
damaged checkpoint (its ``last.json`` holds the search's only record of the best episodes) and a
checkpoint made with another config or seed (:func:`agents.training.check_resume`). The output
folder is checked for writability before any work, and a write that fails late is one line too.
The summary names the reported allocation (``reported_allocation``: usually the best episode the
search found) next to what the trained policy does when run deterministically.

Sweep (``--seeds 0 1 2`` and/or ``--grid KEY=V1,V2,...``, repeatable): a ``purl compare`` grid
whose methods are the grid points (agent override sets) and whose seeds are ``--seeds``: one
full agent run per (grid point, seed) in ``<output>/cells/<label>-s<target>-seed<seed>/``
(``tensorboard --logdir <output>/cells`` shows every unit), in process (``--executor local``,
default) or as parallel Ray tasks (``--executor ray``), then ``results.csv``, ``summary.md``, the
plots and ``results.json``, exactly as ``purl compare`` writes them. Grid values are YAML,
separated by top-level commas (``[0.5,0.9]`` stays one value). A re-run skips finished cells. See
:mod:`agents.sweep`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from purl.cli.common import add_common_arguments, config_from_args, export_line, finish, output_dir, seed_from_arg
from purl.errors import ConfigError, OutputError, PurlError
from purl.results import check_writable


def _allocation_lines(row: dict[str, Any]) -> list[str]:
    """Which allocation was reported, and what the trained policy itself does (both on the reward split)."""
    def describe(prefix: str) -> str:
        if row.get(f"{prefix}_accuracy") is None:
            return "none"
        return (f"reward-split accuracy {100 * row[f'{prefix}_accuracy']:.2f}% one-shot, return "
                f"{row[f'{prefix}_return']:.4f}, sparsity {row[f'{prefix}_global_sparsity']:.4f}")

    kind = row.get("reported_allocation")
    lines = []
    if kind == "best-search-episode":
        lines.append(f"reported: the best episode found during search ({row['policy_source']}): "
                     f"{describe('best_search_episode')}")
    else:
        what = "trained policy, run deterministically" if kind == "deterministic-policy" else "prior allocation"
        lines.append(f"reported: the {what} ({row['policy_source']})")
        if row.get("best_search_episode_source"):
            lines.append(f"best episode found during search ({row['best_search_episode_source']}, not reported): "
                         f"{describe('best_search_episode')}")
    note = "the reported allocation" if kind == "deterministic-policy" else "not the reported allocation"
    lines.append(f"trained policy, run deterministically ({note}): {describe('deterministic_policy')}")
    return lines


def _seeds(text: str) -> list[int]:
    """One --seeds item: ``3`` or ``0,1,2``."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid seed '{text}' (seeds are integers; put KEY=VALUE overrides before --seeds, or end the "
            "seed list with --)") from None
    return seeds


class _ExtendSeeds(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001
        setattr(namespace, self.dest, [seed for item in values for seed in item])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--resume", action="store_true",
                        help="continue from <output>/checkpoints/last.zip (same --output) instead of starting over "
                             "(sweeps always resume: finished units are skipped)")
    sweep = parser.add_argument_group(
        "sweeps", "a purl compare grid of agents: one full run per (grid point, seed) in <output>/cells/, then "
        "<output>/results.csv, summary.md and plots")
    sweep.add_argument("--seeds", nargs="+", type=_seeds, action=_ExtendSeeds, default=None, metavar="SEED",
                       help="agent/fine-tuning seeds of a sweep, e.g. --seeds 0 1 2; the dense model stays the one "
                            "of the config's seed (--seed), shared by every unit")
    sweep.add_argument("--grid", action="append", default=None, metavar="KEY=V1,V2,...",
                       help="sweep a config key over YAML values split at top-level commas (repeatable; the units are "
                            "the cartesian product), e.g. --grid env.reward=purl,amc "
                            "--grid env.reward_kwargs.w_acc=1.0,2.0 --grid env.sparsity_grid=[0.5,0.9],[0.8]")
    sweep.add_argument("--executor", choices=["local", "ray"], default=None,
                       help="local: units one after another in process (default: compare.executor); ray: one Ray "
                            "task per unit with compare.cpus_per_task CPUs / compare.gpus_per_task GPUs")
    sweep.add_argument("--ray-address", default=None,
                       help="Ray cluster to run a sweep on (default: compare.ray_address, else a local Ray)")


def run(args: argparse.Namespace) -> int:
    if args.seeds is not None or args.grid:
        return run_sweep(args)
    if args.executor is not None or args.ray_address is not None:
        raise ConfigError("--executor and --ray-address apply to sweeps: add --seeds and/or --grid "
                          "(e.g. --seeds 0 for one run)")
    from purl.agents.algorithms import get_algorithm
    from purl.agents.run import train_and_save
    from purl.config import MethodSpec
    from purl.methods import get_method
    from purl.runtime import resolve_device
    from purl.task import build_task

    config = config_from_args(args)
    get_method("agent").validate(config, MethodSpec(label="agent", method="agent"))  # fail before any work
    spec = get_algorithm(config.agent.algo)
    device = resolve_device(config.device)
    out = output_dir(args, config, "train")
    for folder in (out, out / "tb", out / "checkpoints"):  # the subfolders a resumed run writes into
        check_writable(folder)
    if args.resume:  # a missing, damaged or foreign checkpoint: fail before pre-training or searching
        from purl.agents.training import check_resume, has_checkpoint
        from purl.errors import CheckpointError

        if not has_checkpoint(out):
            raise CheckpointError(f"cannot resume: '{out}' holds no checkpoint (checkpoints/last.zip); "
                                  "run without --resume to start over")
        check_resume(config, out, config.seed)
    task = build_task(config, device, progress=not args.quiet)
    try:
        row, _ = train_and_save(task, config, out, seed=config.seed,
                                progress=not args.quiet and config.agent.progress_bar, resume=args.resume)
        return _finish(out, row, spec, config)
    except (BrokenPipeError, PurlError):  # PurlError: already one line (OutputError is also an OSError)
        raise
    except OSError as exc:  # e.g. a full disk or a folder made read-only mid-run: one line, not a traceback
        where = f" '{exc.filename}'" if exc.filename else ""
        raise OutputError(f"cannot write{where}: {exc.strerror or exc}; the last checkpoint in '{out}' is kept, "
                          "fix the cause and rerun with --resume", exc) from None


def _granularity(config: Any) -> str:
    return " (channel granularity)" if config.prune.granularity == "channel" else ""


def _metric_words(config: Any) -> str:
    """What the target is a fraction of, in words."""
    metric = config.budget_metric()
    if metric == "flops":
        return "FLOPs (Conv/Linear MACs)"
    return "parameters" if config.prune.granularity == "channel" else "prunable weights"


def _finish(out: Path, row: dict[str, Any], spec: Any, config: Any) -> int:
    """results.json, config.yaml and the printed summary of a single run."""
    return finish(out, row, [
        f"{spec.name} agent ({config.env.action}, reward {config.env.reward}) on {config.model.name}/"
        f"{config.data.name}{_granularity(config)}: target {config.env.target_sparsity:.4f} of the "
        f"{_metric_words(config)} removed, achieved {row['achieved_sparsity']:.4f} ({row['policy_source']} allocation)",
        *_allocation_lines(row),
        f"test top-1 {row['before_test_top1']:.2f}% before fine-tuning -> {row['after_test_top1']:.2f}% after "
        f"(dense {row['dense_test_top1']:.2f}%), FLOPs {row['sparse_flops']:,} / {row['dense_flops']:,}",
        f"search: {row['search_episodes']} episodes, {row['search_env_steps']} env steps, "
        f"{row['search_evaluations']} evaluations, {row['search_wall_time_s']:.1f}s; "
        f"total wall time {row['wall_time_s']:.1f}s",
        f"pruned checkpoint: {row['checkpoint']}; TensorBoard: tensorboard --logdir {out / 'tb'}",
        export_line(row, config.prune.granularity),
    ], config)


def run_sweep(args: argparse.Namespace) -> int:
    """``purl train --seeds ... --grid ...``: the sweep as a ``purl compare`` grid of agents (:mod:`agents.sweep`)."""
    from purl.agents.sweep import parse_grid, sweep_config
    from purl.cli.compare import run_grid

    flags = [f"compare.executor={args.executor}"] if args.executor is not None else []
    if args.ray_address is not None:
        flags.append(f"compare.ray_address={args.ray_address}")
    for seed in args.seeds or []:  # named as the flag the user typed (compare.seeds is what it becomes)
        seed_from_arg(seed, "--seeds")
    base = config_from_args(args, flags)
    config = sweep_config(base, parse_grid(args.grid or []), args.seeds if args.seeds is not None else [base.seed])
    return run_grid(args, config, "sweep", validated=True)
