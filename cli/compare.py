"""``purl compare``: the fair head-to-head of an agent and the baselines on one task.

Every cell (method x target sparsity x seed) uses the same cached dense model,
data split, fine-tuning budget and evaluation. Finished cells are appended to
``results.csv`` immediately; a re-run skips them (and says how many), so an
interrupted comparison resumes where it stopped. A damaged ``results.csv`` (a
row cut short, garbage) is repaired on a re-run: the good rows are kept, the
original is kept as ``results.csv.damaged-<time>`` and the lost cells run again.
The output folder is checked for writability before any work and is created by
the first result written. At the end ``summary.md`` and the plots are written.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from purl.cli.common import add_common_arguments, config_from_args, planned_output_dir

if TYPE_CHECKING:
    from pathlib import Path

    from purl.compare.runner import CellOutcome
    from purl.config import ExperimentConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--executor", choices=["local", "ray"], default=None,
                        help="local (default, in-process) or ray (one task per cell; pip install -e '.[ray]')")
    parser.add_argument("--ray-address", default=None, help="address of an existing Ray cluster (default: local)")


def run(args: argparse.Namespace) -> int:
    overrides = []
    if args.executor is not None:
        overrides.append(f"compare.executor={args.executor}")
    if args.ray_address is not None:
        overrides.append(f"compare.ray_address={args.ray_address}")
    return run_grid(args, config_from_args(args, overrides), "compare")


CELLS_DIR = "cells"  # each cell's folder: <out>/cells/<cell slug>/ (purl.compare.runner)
TB_DIR = "tb"  # an agent cell's TensorBoard logs: <out>/cells/<cell slug>/tb/ (purl.agents.training.TB_DIR)


def run_grid(args: argparse.Namespace, config: ExperimentConfig, command: str, *, validated: bool = False) -> int:
    """Validate every method, run the grid of ``config.compare``, write the report; 1 if a cell failed.

    The one path of ``purl compare`` and of ``purl train --grid/--seeds`` (a sweep is a grid whose
    methods are agent override sets): same results.csv, report, resume and task. ``validated``: the
    caller already validated every method (a sweep names the grid point in its errors), so it is not
    done twice.
    """
    from purl.compare import run_comparison, write_report
    from purl.compare.runner import LocalExecutor
    from purl.config import save_config
    from purl.methods import validate_methods
    from purl.results import write_json
    from purl.runtime import resolve_device
    from purl.task import build_task

    if not validated:
        validate_methods(config)  # unknown method, bad option or override: one line before any work
    device = resolve_device(config.device)
    out = planned_output_dir(args, config, command)  # checked now, created by the first result written
    if config.compare.executor == "ray":  # before any work, so a missing Ray fails fast
        from purl.compare.ray_executor import RayExecutor

        executor = RayExecutor(config.compare, device=str(device))
    start = time.perf_counter()
    per_seed = config.compare.seed_scope == "task"  # one split + dense model per seed: build the first seed's
    task = build_task(config.compare.cell_task_config(config, config.compare.seeds[0]), device,
                      progress=not args.quiet)
    print(f"dense {config.model.name} on {config.data.name}: test top-1 {100 * task.dense_test.top1:.2f}%"
          + (" (cached)" if task.from_cache else f" (pre-trained in {task.pretrain_seconds:.1f}s)")
          + (f"; seed {task.config.seed} of {len(config.compare.seeds)}, one data split and dense model per seed "
             "(compare.seed_scope: task)" if per_seed else ""))
    if config.compare.executor == "local":
        executor = LocalExecutor(task)

    table = run_comparison(config, out, executor=executor, device=str(device), progress=not args.quiet,
                           report=_show_cell)
    written = write_report(out, profile_sparsity=config.compare.profile_sparsity, config=config)
    wall = time.perf_counter() - start
    failed = [r for r in table.rows if r["status"] != "ok"]
    save_config(config, out / "config.yaml")
    write_json(out / "results.json", {
        "command": command, "name": config.name, "cells": len(table.rows), "failed_cells": len(failed),
        "wall_time_s": wall, "files": {k: str(v) for k, v in written.items()} | {"results": str(out / "results.csv")},
    })
    _print_outputs(out, written)
    print(f"results: {out / 'results.csv'}  ({len(table.rows)} cells, {len(failed)} failed, wall time {wall:.1f}s)")
    return 1 if failed else 0


def _show_cell(outcome: CellOutcome, done: int, total: int) -> None:
    """One line per finished cell (progress.write: on its own line, never on the grid bar's terminal line)."""
    from purl.progress import write

    row = outcome.row
    where = f"[{done}/{total}] {row['label']} @ {row['target_sparsity']:g} seed {row['seed']}"
    if outcome.failed:
        write(f"{where}: FAILED ({row['error']})")
    else:
        write(f"{where}: top-1 {row['after_test_top1']:.2f}% (before FT {row['before_test_top1']:.2f}%), "
              f"sparsity {row['achieved_sparsity']:.4f}, {row['wall_time_s']:.1f}s")


def _print_outputs(out: Path, written: dict[str, Path]) -> None:
    """The summary table, the report's files and where the agent cells' TensorBoard logs are."""
    print()
    print((out / "summary.md").read_text())
    for name, path in written.items():
        print(f"{name}: {path}")
    logged = {path.parent.parent.name for path in (out / CELLS_DIR).glob(f"*/{TB_DIR}/events.out.tfevents.*")}
    if logged:  # each agent cell's search logs to cells/<cell>/tb
        print(f"TensorBoard: tensorboard --logdir {out / CELLS_DIR}  ({len(logged)} agent cell(s), each in "
              f"{out / CELLS_DIR}/<cell>/{TB_DIR})")
