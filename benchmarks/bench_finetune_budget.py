"""Does the ranking of pruning methods hold when the fine-tuning budget doubles?

For one config, runs the same ``purl compare`` grid (methods x targets x seeds) once per fine-tuning budget
(``finetune.epochs``; the cosine schedule spans each run), each into its own resumable folder
``<out>/ft<E>/``, then prints, per target, every method's test top-1 (mean and 95% t-interval over seeds)
against the budget, and where the ranking stops changing:

* a *reversal* between budgets b < b' is a pair of methods whose paired difference at b' lies outside its
  95% interval (a real order at the larger budget) while the mean difference at b has the other sign (a
  pair tied on the mean at b that separates at b' is a refinement, not a reversal);
* ``--margin`` (points, default 0.5): a reversal must also lie beyond it at b'. Seeds pair the methods on one
  split and dense model, so the paired interval holds only the fine-tuning noise; on small test splits methods
  often differ by one or two test images identically on every seed, an "order" no user would see;
* the ranking *holds from* b when no pair reverses between any two budgets >= b of the ladder (so
  doubling it, and more, changes nothing beyond noise); the largest budget is never the verdict (nothing
  confirms it). Give a doubling ladder (1 2 4 8 ...).

The test split decides nothing in any cell; this script only reads the finished tables.

    python benchmarks/bench_finetune_budget.py --config configs/quick.yaml --budgets 3 6 12 24 --seeds 0 1 2 3 4
    python benchmarks/bench_finetune_budget.py --config configs/mnist5k-lenet5.yaml --budgets 1 2 4 8 16 \\
        --sparsities 0.9 0.95 0.98 --seeds 0 1 2 --methods global-mp global-mp+mt erk lamp uniform

Writes ``<out>/budget.csv`` (one row per target x method x budget), ``<out>/budget.md`` (the tables and the
verdict) and ``<out>/budget.json`` (the verdict); default ``<out>``:
``benchmarks/results/finetune_budget/<config stem>``. Interrupted runs resume cell by cell.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, config_path  # noqa: E402

from purl.compare.cells import ResultsTable  # noqa: E402
from purl.compare.report import HEADLINE, by_seed, method_names  # noqa: E402
from purl.compare.stats import TIE_TOLERANCE, PairedDifference, paired_difference, t_interval  # noqa: E402

MT_LABEL = "global-mp+mt"
"""``--methods`` shorthand: Global MP with the Minimum Threshold (every layer keeps ``--mt-percent`` percent of all
prunable weights; default 0.05%, the evidence configs' value)."""


def method_entries(names: list[str], mt_percent: float = 0.05) -> str:
    """``compare.methods`` YAML for ``names`` (``global-mp+mt`` becomes Global MP with min_threshold ``mt_percent``,
    in percent of all prunable weights, as ``constraints.min_threshold``)."""
    entries = [f"{{label: global-mp+mt, method: global-mp, min_threshold: {mt_percent:g}}}" if n == MT_LABEL else n
               for n in names]
    return "[" + ", ".join(entries) + "]"


def run_compare(config: Path, folder: Path, settings: list[str], args: argparse.Namespace, what: str) -> Path:
    """``purl compare`` of ``config`` with ``settings`` and the grid options of ``args`` (``--seeds``,
    ``--sparsities``, ``--methods``, ``--set``, ``--device``) into ``folder`` (resumes); ``what`` names the run."""
    from purl.cli.main import main

    argv = ["compare", "--config", str(config), "-o", str(folder), "--device", args.device, "--quiet", *settings,
            f"compare.seeds=[{', '.join(map(str, args.seeds))}]"]
    if args.sparsities:
        argv.append(f"compare.sparsities=[{', '.join(map(str, args.sparsities))}]")
    if args.methods:
        argv.append(f"compare.methods={method_entries(args.methods, getattr(args, 'mt_percent', 0.05))}")
    argv += args.overrides
    print(f"== {what}: purl {' '.join(argv)}", flush=True)
    if main(argv) != 0:
        raise SystemExit(f"purl compare failed ({what})")
    return folder


def run_budget(config: Path, budget: int, args: argparse.Namespace, out: Path) -> Path:
    """``purl compare`` of the grid at ``finetune.epochs=budget`` into ``out/ft<budget>`` (resumes)."""
    return run_compare(config, out / f"ft{budget}", [f"finetune.epochs={budget}"], args,
                       f"budget {budget} epoch(s)")


def collect(folders: dict[int, Path]) -> dict[float, dict[str, dict[int, dict[int, float]]]]:
    """target -> label -> budget -> seed -> top-1 after fine-tuning."""
    table: dict[float, dict[str, dict[int, dict[int, float]]]] = {}
    for budget, folder in folders.items():
        rows = [r for r in ResultsTable.read(folder / "results.csv") if r.get("status") == "ok"]
        for row in rows:
            target = float(row["target_sparsity"])
            cell = table.setdefault(target, {}).setdefault(row["label"], {}).setdefault(budget, {})
            cell.update(by_seed([row], HEADLINE))
    return dict(sorted(table.items()))


def _beyond(diff: PairedDifference, margin: float) -> bool:
    """The paired interval lies wholly above ``+margin`` or wholly below ``-margin`` (points)."""
    return diff.n >= 2 and (diff.low > margin or diff.high < -margin)


def reversals(by_label: dict[str, dict[int, dict[int, float]]], low: int, high: int,
              margin: float = 0.0) -> list[str]:
    """Pairs ordered outside the noise (and beyond ``margin`` points) at budget ``high`` whose mean order at
    ``low`` is the other way."""
    found = []
    for a, b in itertools.combinations(sorted(by_label), 2):
        if low not in by_label[a] or low not in by_label[b] or high not in by_label[a] or high not in by_label[b]:
            continue
        later = paired_difference(by_label[a][high], by_label[b][high])
        earlier = paired_difference(by_label[a][low], by_label[b][low])
        if _beyond(later, margin) and earlier.n and abs(earlier.mean) > TIE_TOLERANCE and \
                math.copysign(1, earlier.mean) != math.copysign(1, later.mean):
            found.append(f"{a} vs {b}: {earlier.mean:+.2f} at {low} ep, {later.mean:+.2f} "
                         f"[{later.low:+.2f}, {later.high:+.2f}] at {high} ep")
    return found


def verdict(table: dict[float, dict[str, dict[int, dict[int, float]]]], budgets: list[int],
            margin: float = 0.0) -> dict[str, Any]:
    """Per target: the smallest budget from which no pair reverses (beyond ``margin`` points) at any larger
    budget, and the reversals."""
    out: dict[str, Any] = {"budgets": budgets, "margin_points": margin, "targets": {}}
    for target, by_label in table.items():
        found = {f"{lo}->{hi}": reversals(by_label, lo, hi, margin) for lo, hi in itertools.combinations(budgets, 2)}
        # the largest budget has nothing larger to confirm it: a verdict needs at least one doubling measured
        # from b on, every budget agrees with every larger one (a stable ranking, not one lucky budget)
        holds = next((b for b in budgets[:-1] if not any(found[f"{lo}->{hi}"] for lo, hi in
                                                          itertools.combinations(budgets, 2) if lo >= b)), None)
        out["targets"][f"{target:g}"] = {"holds_from": holds, "reversals": {k: v for k, v in found.items() if v}}
    holds = [v["holds_from"] for v in out["targets"].values()]
    out["holds_from_every_target"] = None if None in holds or not holds else max(holds)
    return out


def markdown(table: dict[float, dict[str, dict[int, dict[int, float]]]], budgets: list[int],
             names: dict[str, str], result: dict[str, Any], command: str) -> str:
    lines = ["# Fine-tuning budget sensitivity", "", f"`{command}`", "",
             "Test top-1 after fine-tuning (%), mean over seeds ± half-width of the 95% t-interval; rank 1 = best "
             "mean at that budget. A reversal: a pair ordered outside its paired 95% interval at a larger budget, "
             f"by more than the margin ({result['margin_points']:g} points), whose mean order at the smaller budget "
             "is the other way (not tied).", ""]
    for target, by_label in table.items():
        lines += [f"## target {target:g}", "", "| method | " + " | ".join(f"{b} ep" for b in budgets) + " |",
                  "|---|" + "---:|" * len(budgets)]
        means = {b: {label: statistics.fmean(v[b].values()) for label, v in by_label.items() if v.get(b)}
                 for b in budgets}
        ranks = {b: {label: i + 1 for i, label in enumerate(sorted(means[b], key=means[b].get, reverse=True))}
                 for b in budgets}
        for label, per_budget in by_label.items():
            cells = []
            for b in budgets:
                values = list(per_budget.get(b, {}).values())
                mean, low, _ = t_interval(values)
                if not values:
                    cells.append("n/a")
                    continue
                half = "" if math.isnan(low) else f" ± {mean - low:.2f}"
                cells.append(f"{mean:.2f}{half} (#{ranks[b][label]}, n={len(values)})")
            lines.append(f"| {names.get(label, label)} | " + " | ".join(cells) + " |")
        info = result["targets"][f"{target:g}"]
        lines += ["", f"Ranking holds from: **{info['holds_from']} epoch(s)**" if info["holds_from"] is not None
                  else "Ranking holds from: **not within this ladder**"]
        for key, found in info["reversals"].items():
            lines += [f"- reversal {key} epochs: {item}" for item in found]
        lines.append("")
    overall = result["holds_from_every_target"]
    lines.append(f"**Every target: the ranking holds from {overall} epoch(s).**" if overall is not None
                 else "**Every target: the ranking does not settle within this ladder.**")
    return "\n".join(lines) + "\n"


def write_csv(path: Path, table: dict[float, dict[str, dict[int, dict[int, float]]]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["target", "label", "budget_epochs", "n_seeds", "mean_top1", "ci95_low", "ci95_high",
                         "per_seed"])
        for target, by_label in table.items():
            for label, per_budget in by_label.items():
                for budget, values in sorted(per_budget.items()):
                    mean, low, high = t_interval(list(values.values()))
                    writer.writerow([target, label, budget, len(values), f"{mean:.4f}", f"{low:.4f}",
                                     f"{high:.4f}", json.dumps(values)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/quick.yaml")
    parser.add_argument("--budgets", type=int, nargs="+", default=[1, 2, 4, 8, 16],
                        help="finetune.epochs values, a doubling ladder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sparsities", type=float, nargs="*", default=None, help="default: the config's grid")
    parser.add_argument("--methods", nargs="*", default=None,
                        help=f"default: the config's methods; '{MT_LABEL}' = Global MP + MT (min_threshold 0.05: "
                        "every layer keeps --mt-percent %% of all prunable weights)")
    parser.add_argument("--mt-percent", type=float, default=0.05,
                        help=f"the Minimum Threshold of '{MT_LABEL}' in percent of all prunable weights (default 0.05; "
                        "on ResNet-20 0.05 makes targets above 98.9%% infeasible, 0.005 reaches 99.89%%)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--report-only", action="store_true", help="aggregate the folders that exist; run nothing")
    parser.add_argument("--margin", type=float, default=0.5,
                        help="points: a reversal must be beyond this at the larger budget (default 0.5). The "
                        "seed-paired interval holds only fine-tuning noise, and methods often differ by one or two "
                        "test images identically on every seed; 0 = the strict rule")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra config override for every budget (repeatable)")
    args = parser.parse_args()
    config = config_path(args.config)
    budgets = sorted(set(args.budgets))
    out = args.out or RESULTS / "finetune_budget" / config.stem
    out.mkdir(parents=True, exist_ok=True)
    folders = {}
    for budget in budgets:
        folder = out / f"ft{budget}"
        if args.report_only:
            if (folder / "results.csv").is_file():
                folders[budget] = folder
            continue
        folders[budget] = run_budget(config, budget, args, out)
    budgets = sorted(folders)
    table = collect(folders)
    names = method_names([r for f in folders.values() for r in ResultsTable.read(f / "results.csv")])
    result = verdict(table, budgets, args.margin)
    command = "python benchmarks/bench_finetune_budget.py " + " ".join(sys.argv[1:])
    text = markdown(table, budgets, names, result, command)
    write_csv(out / "budget.csv", table)
    (out / "budget.md").write_text(text)
    (out / "budget.json").write_text(json.dumps(result, indent=2) + "\n")
    print(text)
    print(f"wrote {out / 'budget.md'}, {out / 'budget.csv'}, {out / 'budget.json'}")


if __name__ == "__main__":
    main()
