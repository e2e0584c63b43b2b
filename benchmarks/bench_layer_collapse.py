"""Layer collapse of Global MP on mnist5k ResNet-20, with and without Minimum Threshold (MT).

Two measurements on the same cached dense model:

1. **Where collapse starts** (pruning only, no evaluation): by bisection over the global target,
   the lowest sparsity at which Global MP prunes every weight of some layer, for each variant;
   with MT, also the highest sparsity the MT floors allow (beyond it the target is infeasible).
2. **Accuracy along a sparsity sweep** (default 0.9 ... 0.999): test top-1 right after pruning and
   after a short fine-tune (``--finetune-steps`` optimiser steps, same for every variant), the
   number of collapsed layers, and which. Targets beyond a variant's feasible maximum are
   reported as infeasible (no number).

Variants: ``global-mp`` (no MT) and ``global-mp+mt`` for each ``--min-thresholds`` value (MT is a
percent of all prunable weights that every layer keeps: 0.05 = 0.05%). Writes
``layer_collapse.csv`` and ``layer_collapse.png`` to ``--output`` and prints a table.

    python benchmarks/bench_layer_collapse.py [--sparsities 0.9 0.95 ...] [--min-thresholds 0.05 0.005]
        [--finetune-steps 25] [--output benchmarks/results]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path
from typing import Any

from _common import RESULTS, build, log, markdown_table, pyplot, set_threads, task_config, write_csv

SPARSITIES = [0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999]


def variants(min_thresholds: list[float]):
    """``[MethodSpec, ...]``: Global MP without MT, then with each MT value."""
    from purl.config import MethodSpec

    return [MethodSpec(label="global-mp", method="global-mp")] + [
        MethodSpec(label=f"global-mp+mt{mt:g}", method="global-mp", min_threshold=mt) for mt in min_thresholds]


def prune_only(task, spec, sparsity: float) -> list[str]:
    """Collapsed layers of Global MP (``spec``) at ``sparsity``, without evaluating anything."""
    import torch

    from purl.baselines.base import LayerCollapseWarning, get_allocator
    from purl.baselines.run import constraints_for
    from purl.pruning import pruning_stats

    _, masks = task.fresh_copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LayerCollapseWarning)
        get_allocator(spec.method).prune(masks, sparsity, constraints_for(task, spec),
                                         generator=torch.Generator().manual_seed(0))
    return pruning_stats(task.profiles, masks.pruned()).collapsed_layers


def feasible_max(task, spec) -> float:
    """Highest global sparsity the variant's constraints allow."""
    from purl.baselines.run import constraints_for

    return constraints_for(task, spec).feasible_max_sparsity(task.prunable_layers())


def first_collapse(task, spec, lo: float = 0.5, iters: int = 24) -> tuple[float | None, list[str]]:
    """Bisection for the lowest sparsity (to ~1e-7) at which some layer collapses; None if none does."""
    hi = min(feasible_max(task, spec), 1.0 - 1e-9)
    top = prune_only(task, spec, hi)
    if not top:
        return None, []
    if prune_only(task, spec, lo):
        return lo, prune_only(task, spec, lo)
    for _ in range(iters):
        mid = (lo + hi) / 2
        if prune_only(task, spec, mid):
            hi = mid
        else:
            lo = mid
    return hi, prune_only(task, spec, hi)


def sweep_point(task, spec, sparsity: float, seed: int) -> dict[str, Any]:
    """Prune at ``sparsity``, fine-tune briefly, measure (or mark infeasible)."""
    from purl.baselines.base import LayerCollapseWarning
    from purl.baselines.run import run_baseline

    row: dict[str, Any] = {"variant": spec.label, "min_threshold": spec.min_threshold, "target_sparsity": sparsity}
    if sparsity > feasible_max(task, spec) + 1e-12:
        return row | {"status": "infeasible", "feasible_max_sparsity": feasible_max(task, spec)}
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LayerCollapseWarning)
        measured, _, _ = run_baseline(task, spec, sparsity, seed=seed, progress=False)
    return row | {"status": "ok", "achieved_sparsity": measured["achieved_sparsity"],
                  "n_collapsed": measured["n_collapsed"], "collapsed_layers": measured["collapsed_layers"],
                  "before_test_top1": measured["before_test_top1"], "after_test_top1": measured["after_test_top1"],
                  "finetune_steps": measured["finetune_steps"], "wall_s": time.perf_counter() - start}


def plot(rows: list[dict[str, Any]], dense: float, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for label in dict.fromkeys(r["variant"] for r in rows):
        ok = [r for r in rows if r["variant"] == label and r["status"] == "ok"]
        xs = [100 * (1 - r["target_sparsity"]) for r in ok]
        line, = ax.plot(xs, [r["after_test_top1"] for r in ok], marker="o", label=f"{label} (after FT)")
        ax.plot(xs, [r["before_test_top1"] for r in ok], marker="x", ls=":", color=line.get_color(),
                label=f"{label} (before FT)")
        for r in ok:
            if r["n_collapsed"]:
                ax.annotate(f"{r['n_collapsed']} coll.", (100 * (1 - r["target_sparsity"]), r["after_test_top1"]),
                            fontsize=7, color=line.get_color())
    ax.axhline(dense, color="gray", ls="--", lw=1, label="dense")
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("weights kept (%), log scale")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("mnist5k ResNet-20: Global MP with / without MT")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsities", nargs="+", type=float, default=SPARSITIES)
    parser.add_argument("--min-thresholds", nargs="+", type=float, default=[0.05, 0.005],
                        help="MT values (percent of all prunable weights per layer)")
    parser.add_argument("--finetune-steps", type=int, default=25, help="short fine-tune: optimiser steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    start = time.perf_counter()
    config = task_config("resnet20", ["finetune.epochs=1", f"finetune.max_steps={args.finetune_steps}"],
                         device=args.device, cache_dir=args.cache_dir)
    task = build(config)
    dense = 100 * task.dense_test.top1
    specs = variants(args.min_thresholds)
    onset = []
    for spec in specs:
        sparsity, layers = first_collapse(task, spec)
        onset.append({"variant": spec.label, "first_collapse_sparsity": sparsity, "first_collapsed": layers,
                      "feasible_max_sparsity": feasible_max(task, spec)})
        log(f"{spec.label}: first collapse at sparsity {sparsity if sparsity is None else f'{sparsity:.6f}'} "
            f"({', '.join(layers) or 'none'}); feasible max {feasible_max(task, spec):.6f}")
    rows = []
    for spec in specs:
        for sparsity in args.sparsities:
            row = sweep_point(task, spec, sparsity, args.seed)
            rows.append(row)
            if row["status"] == "ok":
                log(f"{spec.label} @ {sparsity}: {row['n_collapsed']} collapsed, top-1 before FT "
                    f"{row['before_test_top1']:.2f}%, after {row['finetune_steps']} FT steps "
                    f"{row['after_test_top1']:.2f}% ({row['wall_s']:.0f}s)")
            else:
                log(f"{spec.label} @ {sparsity}: infeasible (max {row['feasible_max_sparsity']:.6f})")
    for o in onset:  # accuracy at the first swept sparsity with a collapse
        first = next((r for r in rows if r["variant"] == o["variant"] and r["status"] == "ok" and r["n_collapsed"]),
                     None)
        o.update({"first_swept_collapse": first["target_sparsity"] if first else None,
                  "top1_before_ft_there": first["before_test_top1"] if first else None,
                  "top1_after_ft_there": first["after_test_top1"] if first else None})
    args.output.mkdir(parents=True, exist_ok=True)
    write_csv(args.output / "layer_collapse.csv", rows)
    write_csv(args.output / "layer_collapse_onset.csv", onset)
    plot(rows, dense, args.output / "layer_collapse.png")
    print(f"\nmnist5k ResNet-20, dense test top-1 {dense:.2f}%; short fine-tune = {args.finetune_steps} steps; "
          f"seed {args.seed}")
    table = [{"variant": r["variant"], "target": f"{r['target_sparsity']:g}", "status": r["status"],
              "n_collapsed": r.get("n_collapsed"), "before": r.get("before_test_top1"),
              "after": r.get("after_test_top1"), "layers": ", ".join(r.get("collapsed_layers") or [])}
             for r in rows]
    print(markdown_table(table, [("variant", "variant"), ("target", "sparsity"), ("status", "status"),
                                 ("n_collapsed", "collapsed layers"), ("before", "top-1 before FT (%)"),
                                 ("after", "top-1 after FT (%)"), ("layers", "which")]))
    print()
    print(markdown_table(onset, [("variant", "variant"), ("first_collapse_sparsity", "first collapse (bisection)"),
                                 ("first_collapsed", "layer"), ("feasible_max_sparsity", "feasible max"),
                                 ("first_swept_collapse", "first swept target with collapse"),
                                 ("top1_before_ft_there", "top-1 there before FT (%)"),
                                 ("top1_after_ft_there", "after FT (%)")], digits=4))
    print(f"\nwrote {args.output}/layer_collapse{{.csv,_onset.csv,.png}}; total wall time "
          f"{time.perf_counter() - start:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
