"""What does warm-starting the agent's search across a grid's targets buy, and what does it cost?

Runs one ``purl compare`` grid twice, with the same config, targets and seeds: ``cold`` (``agent.warm_start:
none``: every target's search from scratch, ``agent.total_timesteps`` steps) and ``warm`` (``previous-target``:
the first target from scratch, every later one from the previous target's finished policy for
``--warm-fraction`` of ``agent.total_timesteps``). Each grid goes into its own resumable folder, ``<out>/cold``
and ``<out>/warm``.
Then prints, per target: the agent's test top-1 in both grids, warm minus cold (paired by seed, 95% Student-t
interval, W/T/L), the agent minus the best baseline of the grid (the baseline with the highest mean at that
target), and how many reported allocations came from the search (``policy_source`` other than ``prior``); and
per grid the cost: the median agent cell, the median baseline cell and their ratio, measured in the same run
(the two grids run one after the other, so compare ratios, not seconds, between them).

    python benchmarks/bench_warm_start.py --config configs/quick.yaml --seeds 1 2 --warm-fraction 0.5

Writes ``<out>/warm_start.md`` and ``<out>/warm_start.json``; default ``<out>``:
``benchmarks/results/warm_start/<config stem>``. The test split decides nothing; this script only reads the
finished tables.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, config_path  # noqa: E402
from bench_finetune_budget import MT_LABEL, run_compare  # noqa: E402

from purl.compare.cells import ResultsTable  # noqa: E402
from purl.compare.report import HEADLINE, best_baseline, by_seed, method_names  # noqa: E402
from purl.compare.stats import PairedDifference, paired_difference  # noqa: E402

MODES = {"cold": "none", "warm": "previous-target"}


def run_grid(config: Path, mode: str, args: argparse.Namespace, out: Path) -> Path:
    """``purl compare`` of the grid with ``agent.warm_start`` of ``mode`` into ``out/<mode>`` (resumes)."""
    settings = [f"agent.warm_start={MODES[mode]}", f"agent.warm_start_fraction={args.warm_fraction}",
                "agent.progress_bar=false"]
    return run_compare(config, out / mode, settings, args, f"the {mode} grid")


def _ok(folder: Path) -> list[dict[str, Any]]:
    return [r for r in ResultsTable.read(folder / "results.csv") if r["status"] == "ok"]


def _at(rows: list[dict[str, Any]], target: float, label: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["label"] == label and abs(float(r["target_sparsity"]) - target) < 1e-9]


def _diff_text(diff: PairedDifference) -> str:
    return f"{diff.mean:+.2f} [{diff.low:+.2f}, {diff.high:+.2f}] {diff.wtl}"


def cost(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Median agent cell, median baseline cell (seconds) and their ratio, within one grid."""
    agent = [float(r["wall_time_s"]) for r in rows if r["method"] == "agent"]
    base = [float(r["wall_time_s"]) for r in rows if r["method"] != "agent"]
    search = [float(r["search_wall_time_s"]) for r in rows if r["method"] == "agent"]
    a, b = statistics.median(agent), statistics.median(base)
    return {"agent_cell_s": a, "baseline_cell_s": b, "ratio": a / b, "search_s": statistics.median(search),
            "search_total_s": sum(search)}


def _same_allocations(cold: list[dict[str, Any]], warm: list[dict[str, Any]]) -> int:
    """Seeds whose cold and warm agent reported the same per-layer allocation (then every budget gives both the
    same accuracy: the fine-tuning is the same)."""
    maps = {int(r["seed"]): r["layer_sparsity"] for r in cold}
    return sum(maps.get(int(r["seed"])) == r["layer_sparsity"] for r in warm)


def target_row(cold: list[dict[str, Any]], warm: list[dict[str, Any]], target: float,
               baselines: list[str]) -> dict[str, Any]:
    """One target's comparison: agent cold and warm, warm - cold, warm agent - best baseline, searched counts."""
    best = best_baseline({b: _at(warm, target, b) for b in baselines})  # the rule summary.md uses
    agent_cold, agent_warm = by_seed(_at(cold, target, "agent"), HEADLINE), by_seed(_at(warm, target, "agent"),
                                                                                    HEADLINE)
    best_cold, best_warm = by_seed(_at(cold, target, best), HEADLINE), by_seed(_at(warm, target, best), HEADLINE)
    return {
        "target": target, "best_baseline": best,
        "agent_cold": statistics.fmean(agent_cold.values()), "agent_warm": statistics.fmean(agent_warm.values()),
        "best_baseline_mean": statistics.fmean(best_warm.values()),
        "warm_minus_cold": paired_difference(agent_warm, agent_cold),
        "warm_minus_best": paired_difference(agent_warm, best_warm),
        "cold_minus_best": paired_difference(agent_cold, best_cold),
        "searched_cold": sum(r["policy_source"] != "prior" for r in _at(cold, target, "agent")),
        "searched_warm": sum(r["policy_source"] != "prior" for r in _at(warm, target, "agent")),
        "same_allocation": _same_allocations(_at(cold, target, "agent"), _at(warm, target, "agent")),
        "cells": len(agent_warm),
    }


def markdown(rows: list[dict[str, Any]], costs: dict[str, dict[str, float]], names: dict[str, str],
             command: str) -> str:
    lines = ["# Warm-started search across targets", "", f"`{command}`", "",
             "Test top-1 (%), mean over seeds; paired differences with 95% Student-t intervals and W/T/L; "
             "'searched': cells whose reported allocation came from the search (not the prior); 'same allocation': "
             "seeds whose cold and warm agent reported the same per-layer allocation.", "",
             "| target | agent cold | agent warm | best baseline | warm - cold | cold - best | warm - best "
             "| searched cold / warm | same allocation |", "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['target']:g} | {r['agent_cold']:.2f} | {r['agent_warm']:.2f} | "
                     f"{names.get(r['best_baseline'], r['best_baseline'])} {r['best_baseline_mean']:.2f} | "
                     f"{_diff_text(r['warm_minus_cold'])} | {_diff_text(r['cold_minus_best'])} | "
                     f"{_diff_text(r['warm_minus_best'])} | {r['searched_cold']} / {r['searched_warm']} "
                     f"of {r['cells']} | {r['same_allocation']} of {r['cells']} |")
    lines += ["", "| grid | median agent cell (s) | median baseline cell (s) | ratio | median search (s) | "
              "all searches (s) |", "|---|---:|---:|---:|---:|---:|"]
    for mode, c in costs.items():
        lines.append(f"| {mode} | {c['agent_cell_s']:.1f} | {c['baseline_cell_s']:.1f} | {c['ratio']:.1f}x | "
                     f"{c['search_s']:.1f} | {c['search_total_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/quick.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--sparsities", type=float, nargs="*", default=None, help="default: the config's grid")
    parser.add_argument("--methods", nargs="*", default=None,
                        help=f"default: the config's methods (include agent); '{MT_LABEL}' = Global MP + MT "
                        "(0.05%% of all prunable weights per layer)")
    parser.add_argument("--warm-fraction", type=float, default=0.5,
                        help="agent.warm_start_fraction of the warm grid (default 0.5, the config default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--report-only", action="store_true", help="aggregate the folders that exist; run nothing")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra config override for both grids (repeatable)")
    args = parser.parse_args()
    config = config_path(args.config)
    out = args.out or RESULTS / "warm_start" / config.stem
    out.mkdir(parents=True, exist_ok=True)
    folders = {mode: out / mode if args.report_only else run_grid(config, mode, args, out) for mode in MODES}
    cold, warm = _ok(folders["cold"]), _ok(folders["warm"])
    targets = sorted({float(r["target_sparsity"]) for r in warm})
    baselines = sorted({r["label"] for r in warm if r["method"] != "agent"})
    rows = [target_row(cold, warm, t, baselines) for t in targets]
    costs = {mode: cost(rows_) for mode, rows_ in (("cold", cold), ("warm", warm))}
    command = "python benchmarks/bench_warm_start.py " + " ".join(sys.argv[1:])
    text = markdown(rows, costs, method_names(cold + warm), command)
    (out / "warm_start.md").write_text(text)
    serial = [{k: (vars(v) if isinstance(v, PairedDifference) else v) for k, v in r.items()} for r in rows]
    (out / "warm_start.json").write_text(json.dumps({"targets": serial, "cost": costs}, indent=2) + "\n")
    print(text)
    print(f"wrote {out / 'warm_start.md'}, {out / 'warm_start.json'}")


if __name__ == "__main__":
    main()
