"""The head-to-head: the RL agent vs Global MP (with and without Minimum Threshold) and other allocators.

Runs ``purl compare`` on mnist5k LeNet-5 and mnist5k ResNet-20 at target sparsities
0.8 / 0.9 / 0.95 / 0.98 with seeds 0 1 2 and the methods of the shipped configs: ``agent``
(PPO, PuRL per-step reward), ``global-mp``, ``global-mp+mt`` (Global MP with Minimum Threshold
0.05% of all prunable weights per layer), ``uniform``, ``lamp``, ``erk``. Every cell starts from
the same cached dense model and gets the same fine-tuning. The budgets are cut down so the
grid fits a 2-core CPU (``--finetune-epochs``, ``--timesteps``, ``--val-samples``; set them to
the configs' values to run the full comparison).

The comparisons run in ``--workdir/<model>`` (resumable: a re-run skips finished cells);
``summary.md``, ``results.csv`` and the plots are copied to ``--output/<model>/`` and
a compact table (mean after-fine-tuning test top-1 per method and sparsity) is printed.

    python benchmarks/bench_agent_vs_global_mp.py [--models lenet5 resnet20] [--seeds 0 1 2]
        [--sparsities 0.8 0.9 0.95 0.98] [--timesteps lenet5=300 resnet20=132] [--output DIR]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

from _common import (
    MODELS,
    RESULTS,
    ROOT,
    config_path,
    log,
    markdown_table,
    model_label,
    per_model,
    read_csv,
    set_threads,
)

DEFAULT_TIMESTEPS = {"lenet5": 400, "resnet20": 1100}  # ResNet-20: 50 episodes of 22 steps
DEFAULT_FINETUNE = {"lenet5": 1, "resnet20": 1}
#: PPO rollout per model (LeNet-5: 4 steps/episode, 25 episodes per rollout; ResNet-20: 22 steps/episode,
#: 2 episodes per rollout so that even a 132-step search (6 episodes) gets PPO updates)
PPO_HYPERPARAMS = {"lenet5": "{n_steps: 100, batch_size: 50, n_epochs: 5, learning_rate: 0.001}",
                   "resnet20": "{n_steps: 44, batch_size: 22, n_epochs: 5, learning_rate: 0.001}"}
COPY = ("summary.md", "results.csv") + tuple(f"{plot}.{ext}" for plot in (
    "accuracy_vs_compression", "accuracy_vs_flops", "layer_profile", "learning_curve") for ext in ("png", "svg"))




def compare_args(model: str, args: argparse.Namespace, timesteps: int, finetune: int, out: Path,
                 max_steps: int | None = None) -> list[str]:
    """The ``purl compare`` command line of one model (``max_steps`` caps fine-tuning steps)."""
    seeds = "[" + ", ".join(str(s) for s in args.seeds) + "]"
    sparsities = "[" + ", ".join(str(s) for s in args.sparsities) + "]"
    hyper = [f"agent.hyperparams={PPO_HYPERPARAMS[model]}"] if model in PPO_HYPERPARAMS else []
    val = args.val_samples if args.val_samples else (256 if model in MODELS else None)
    budget = [f"finetune.epochs={finetune}"] if finetune else []
    budget += [f"agent.total_timesteps={timesteps}"] if timesteps else []
    return ["compare", "--config", str(config_path(model)), "-o", str(out), "--device", args.device, "--quiet",
            f"compare.seeds={seeds}", f"compare.sparsities={sparsities}",
            *budget, *hyper, *([f"env.val_samples={val}"] if val else []),
            "agent.progress_bar=false", "agent.checkpoint_every=100000", "compare.profile_sparsity=0.95",
            *([f"finetune.max_steps={max_steps}"] if max_steps else [])]


def accuracy_table(results_csv: Path) -> tuple[list[dict], list[tuple[str, str]]]:
    """Mean ± std after-FT test top-1 per method (rows) and target sparsity (columns), plus collapses."""
    rows = [r for r in read_csv(results_csv) if r["status"] == "ok"]
    labels = list(dict.fromkeys(r["label"] for r in rows))
    targets = sorted({float(r["target_sparsity"]) for r in rows})
    table = []
    for label in labels:
        line: dict[str, object] = {"method": label}
        for t in targets:
            vals = [float(r["after_test_top1"]) for r in rows
                    if r["label"] == label and float(r["target_sparsity"]) == t]
            coll = sum(int(float(r["n_collapsed"] or 0)) > 0 for r in rows
                       if r["label"] == label and float(r["target_sparsity"]) == t)
            if vals:
                std = statistics.stdev(vals) if len(vals) > 1 else 0.0
                line[str(t)] = f"{statistics.fmean(vals):.2f} ± {std:.2f} (n={len(vals)}" + (
                    f", {coll} collapsed)" if coll else ")")
        walls = [float(r["wall_time_s"]) for r in rows if r["label"] == label]
        line["cell_wall_s"] = statistics.median(walls)
        table.append(line)
    columns = [("method", "method")] + [(str(t), f"{t:g}") for t in targets] + [("cell_wall_s",
                                                                                  "median cell wall (s)")]
    return table, columns


def main(argv: list[str] | None = None) -> int:
    from purl.cli.main import main as purl_main

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["lenet5", "resnet20"],
                        help=f"{', '.join(MODELS)} or config YAML paths (their own budgets unless overridden)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--sparsities", nargs="+", type=float, default=[0.8, 0.9, 0.95, 0.98])
    parser.add_argument("--timesteps", nargs="*", default=[], help="agent env steps: N or MODEL=N")
    parser.add_argument("--finetune-epochs", nargs="*", default=[], help="fine-tuning epochs: N or MODEL=N")
    parser.add_argument("--finetune-steps", nargs="*", default=[],
                        help="cap on fine-tuning optimiser steps: N or MODEL=N (default: no cap)")
    parser.add_argument("--val-samples", type=int, default=None,
                        help="reward-split images per env evaluation (default 256 for lenet5/resnet20, else config's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", type=Path, default=RESULTS / "agent_vs_gmp")
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench_agent_vs_gmp")
    args = parser.parse_args(argv)
    timesteps = per_model(args.timesteps, DEFAULT_TIMESTEPS, args.models)
    finetune = per_model(args.finetune_epochs, DEFAULT_FINETUNE, args.models)
    max_steps = per_model(args.finetune_steps, dict.fromkeys(MODELS, 0), args.models)
    set_threads(args.threads)
    failures = 0
    for model in args.models:
        work = args.workdir / model_label(model)
        command = compare_args(model, args, timesteps[model], finetune[model], work, max_steps[model])
        log(f"{model}: purl {' '.join(command[1:])}")
        start = time.perf_counter()
        code = purl_main(command)
        wall = time.perf_counter() - start
        failures += code != 0
        dest = args.output / model_label(model)
        dest.mkdir(parents=True, exist_ok=True)
        for name in COPY:
            if (work / name).is_file():
                shutil.copy2(work / name, dest / name)
        table, columns = accuracy_table(work / "results.csv")
        print(f"\n{model}: test top-1 after fine-tuning (%), mean ± std over seeds {args.seeds}; "
              f"agent {timesteps[model]} env steps, fine-tune {finetune[model]} epoch(s), "
              f"val_samples {args.val_samples or (256 if model in MODELS else 'config')}; "
              f"this invocation took {wall:.0f}s (exit {code})")
        print(markdown_table(table, columns, digits=1))
        log(f"{model}: copied {', '.join(n for n in COPY if (work / n).is_file())} to {dest}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
