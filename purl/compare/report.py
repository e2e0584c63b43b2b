"""``summary.md`` and PNG plots of a comparison, regenerated from ``results.csv`` alone.

Plots (ShrinkBench-style, Blalock et al. 2020): top-1 against compression ratio
(log2 axis) and against FLOPs, one line per method with mean +- std over seeds;
the per-layer sparsity profile of every method at one target; and the agent's
learning curve (episode return against env steps).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from purl.compare.cells import ResultsTable
from purl.results import write_text

SUMMARY_COLUMNS: list[tuple[str, str, bool, str]] = [
    # (row key, header, higher is better, format)
    ("after_test_top1", "top-1 after FT (%)", True, "{:.2f}"),
    ("before_test_top1", "top-1 before FT (%)", True, "{:.2f}"),
    ("after_test_top5", "top-5 after FT (%)", True, "{:.2f}"),
    ("achieved_sparsity", "sparsity", True, "{:.4f}"),
    ("compression_ratio", "compression", True, "{:.1f}x"),
    ("theoretical_speedup", "FLOPs speedup", True, "{:.2f}x"),
    ("n_collapsed", "collapsed layers", False, "{:.1f}"),
    ("n_near_collapsed", "near-collapsed layers", False, "{:.1f}"),
]


def _ok_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("status") == "ok"]


def _group(rows: Sequence[dict[str, Any]]) -> dict[float, dict[str, list[dict[str, Any]]]]:
    """target sparsity -> method label -> rows, in first-seen label order."""
    groups: dict[float, dict[str, list[dict[str, Any]]]] = defaultdict(dict)
    for row in rows:
        groups[float(row["target_sparsity"])].setdefault(row["label"], []).append(row)
    return dict(sorted(groups.items()))


def mean_std(values: Sequence[float | None]) -> tuple[float, float]:
    """Mean and sample std of the finite values (std 0 for one value; NaNs when there are none)."""
    finite = [v for v in values if v is not None and not math.isinf(v) and not math.isnan(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0


def summary_markdown(rows: Sequence[dict[str, Any]], title: str = "Comparison summary") -> str:
    """Mean +- std per method and target sparsity; the best value of each column (per target) in bold."""
    ok = _ok_rows(rows)
    lines = [f"# {title}", "", "Mean ± std over seeds (n = number of seeds). Accuracies on the test split, "
             "which no method used for any decision. Best per target sparsity in **bold**.", ""]
    header = ["target", "method", "n"] + [h for _, h, _, _ in SUMMARY_COLUMNS]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] * 3 + ["---:"] * len(SUMMARY_COLUMNS)) + "|")
    for target, by_label in _group(ok).items():
        stats = {label: {key: mean_std([r.get(key) for r in group]) for key, *_ in SUMMARY_COLUMNS}
                 for label, group in by_label.items()}
        best: dict[str, float] = {}
        for key, _, higher, fmt in SUMMARY_COLUMNS:
            means = [stats[label][key][0] for label in stats if not math.isnan(stats[label][key][0])]
            shown = {float(fmt.format(m).rstrip("x")) for m in means}
            if len(shown) > 1:  # mark a winner only where methods differ
                best[key] = max(shown) if higher else min(shown)
        for label, group in by_label.items():
            cells = [f"{target:g}", label, str(len(group))]
            for key, _, _, fmt in SUMMARY_COLUMNS:
                mean, std = stats[label][key]
                if math.isnan(mean):
                    cells.append("n/a")
                    continue
                text = fmt.format(mean)
                if len(group) > 1:
                    text += " ± " + fmt.format(std).rstrip("x")
                if key in best and float(fmt.format(mean).rstrip("x")) == best[key]:
                    text = f"**{text}**"
                cells.append(text)
            lines.append("| " + " | ".join(cells) + " |")
    failed = [r for r in rows if r.get("status") != "ok"]
    if failed:
        lines += ["", "## Failed cells", ""]
        for r in failed:
            lines.append(f"- {r['label']} @ {float(r['target_sparsity']):g}, seed {r['seed']}: {r.get('error')}")
    agent = [r for r in ok if r.get("search_env_steps")]
    if agent:
        lines += ["", "## Agent search cost", "", "| target | method | seed | episodes | env steps | evaluations | "
                  "search time (s) |", "|---|---|---:|---:|---:|---:|---:|"]
        for r in agent:
            lines.append(f"| {float(r['target_sparsity']):g} | {r['label']} | {r['seed']} | {r['search_episodes']} "
                         f"| {r['search_env_steps']} | {r['search_evaluations']} "
                         f"| {float(r['search_wall_time_s']):.1f} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _method_series(rows: Sequence[dict[str, Any]], x_key: str) -> dict[str, list[tuple[float, float, float]]]:
    """label -> [(mean x, mean top-1, std top-1)] sorted by x."""
    series: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for by_label in _group(rows).values():
        for label, group in by_label.items():
            x, _ = mean_std([float(r[x_key]) for r in group])
            y, dy = mean_std([float(r["after_test_top1"]) for r in group])
            if not math.isnan(x) and not math.isnan(y):
                series[label].append((x, y, dy))
    return {label: sorted(points) for label, points in series.items()}


def _accuracy_plot(rows: Sequence[dict[str, Any]], x_key: str, xlabel: str, base: int, path: Path,
                   invert: bool = False) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, points in _method_series(rows, x_key).items():
        xs, ys, dys = zip(*points, strict=True)
        ax.errorbar(xs, ys, yerr=dys, marker="o", capsize=3, label=label)
    dense = [float(r["dense_test_top1"]) for r in rows if r.get("dense_test_top1") is not None]
    if dense:
        ax.axhline(statistics.fmean(dense), color="gray", linestyle="--", linewidth=1, label="dense")
    ax.set_xscale("log", base=base)
    if invert:
        ax.invert_xaxis()
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test top-1 after fine-tuning (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def pick_profile_sparsity(rows: Sequence[dict[str, Any]], requested: float | None = None) -> float | None:
    """The requested target if present, else the target covered by the most methods (highest on ties)."""
    groups = _group(_ok_rows(rows))
    if not groups:
        return None
    if requested is not None:
        close = [t for t in groups if abs(t - requested) < 1e-9]
        if close:
            return close[0]
    return max(groups, key=lambda t: (len(groups[t]), t))


def layer_profile_plot(rows: Sequence[dict[str, Any]], target: float, path: Path) -> Path:
    """Per-layer sparsity of every method at ``target`` (mean over seeds), one group of bars per layer."""
    plt = _pyplot()
    by_label = _group(_ok_rows(rows)).get(target, {})
    fig, ax = plt.subplots(figsize=(max(7, 0.45 * _n_layers(by_label) + 3), 4.5))
    width = 0.8 / max(len(by_label), 1)
    names: list[str] = []
    for i, (label, group) in enumerate(by_label.items()):
        layers = group[0]["layer_sparsity"] or {}
        names = names or list(layers)
        ys = [statistics.fmean(float(r["layer_sparsity"][n]) for r in group) for n in names]
        ax.bar([j + i * width for j in range(len(names))], ys, width=width, label=label)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))])
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("layer sparsity")
    ax.set_title(f"Per-layer sparsity at global sparsity {target:g}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _n_layers(by_label: dict[str, list[dict[str, Any]]]) -> int:
    return max((len(g[0]["layer_sparsity"] or {}) for g in by_label.values()), default=0)


def learning_curve_plot(rows: Sequence[dict[str, Any]], path: Path, window: int = 20) -> Path | None:
    """Agent episode return against env steps (moving average), one line per agent cell."""
    curves = [(r, r["learning_curve"]) for r in _ok_rows(rows) if r.get("learning_curve")]
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row, curve in curves:
        steps = [float(p[0]) for p in curve]
        returns = [float(p[1]) for p in curve]
        smooth = [statistics.fmean(returns[max(0, i - window + 1):i + 1]) for i in range(len(returns))]
        ax.plot(steps, smooth, label=f"{row['label']} @ {float(row['target_sparsity']):g}, seed {row['seed']}")
    ax.set_xlabel("env steps")
    ax.set_ylabel(f"episode return (moving average of {window})")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(directory: str | Path, *, profile_sparsity: float | None = None,
                 title: str | None = None) -> dict[str, Path]:
    """Regenerate ``summary.md`` and the plots in ``directory`` from its ``results.csv``."""
    directory = Path(directory)
    rows = ResultsTable.read(directory / "results.csv")
    ok = _ok_rows(rows)
    written = {"summary": write_text(directory / "summary.md", summary_markdown(rows, title or "Comparison summary"))}
    if ok:
        written["accuracy_vs_compression"] = _accuracy_plot(
            ok, "compression_ratio", "compression ratio (log2)", 2, directory / "accuracy_vs_compression.png")
        written["accuracy_vs_flops"] = _accuracy_plot(
            ok, "sparse_flops", "FLOPs per sample after pruning (MACs, log10)", 10,
            directory / "accuracy_vs_flops.png", invert=True)
        target = pick_profile_sparsity(ok, profile_sparsity)
        if target is not None:
            written["layer_profile"] = layer_profile_plot(ok, target, directory / "layer_profile.png")
        curve = learning_curve_plot(ok, directory / "learning_curve.png")
        if curve is not None:
            written["learning_curve"] = curve
    return written
