"""``summary.md`` and the plots of a comparison, regenerated from ``results.csv`` (and its ``config.yaml``).

Plots (ShrinkBench-style, Blalock et al. 2020), each written as PNG and SVG: top-1
against compression ratio (log2 axis) and against FLOPs (log10 axis, increasing to
the right), one line per method with mean +- std over seeds; the per-layer sparsity
profile of every method at one target; and the agent's learning curve (episode
return against env steps). Methods are shown by :func:`display_name` ("Global MP",
"Global MP + MT", "PPO agent", ...) everywhere: tables, legends.

The comparison's config (passed in, or the folder's saved ``config.yaml``) supplies
``compare.profile_sparsity`` and the agents' algorithms, so ``purl report`` redraws
exactly what ``purl compare`` drew.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from purl.checkpoint import atomic_write_bytes
from purl.compare.cells import ResultsTable
from purl.compare.stats import TIE_TOLERANCE, PairedDifference, interval_half_width, paired_difference
from purl.errors import PurlError
from purl.results import write_text

if TYPE_CHECKING:
    from purl.config import ExperimentConfig

PLOT_FORMATS: tuple[str, ...] = ("png", "svg")
"""Every plot is written once per format, side by side (``name.png``, ``name.svg``)."""

METHOD_DISPLAY_NAMES: dict[str, str] = {
    "global-mp": "Global MP",
    "uniform": "Uniform",
    "uniform-plus": "Uniform+",
    "erk": "ERK",
    "lamp": "LAMP",
    "random": "Random",
    "layerwise": "Layer-wise",
}
"""Allocator name (``compare.methods``' ``method``) -> how reports show it."""

_LABEL_SUFFIXES = {"mt", "gradual", "oneshot"}


# ----------------------------------------------------------------------------- method names


def _algo_name(algo: str) -> str:
    """``ppo`` -> ``PPO``; ``mypkg.algos:MyPPO`` -> ``MyPPO``."""
    return algo.rsplit(":", 1)[-1] if ":" in algo else algo.upper()


def _generated_label(label: str, method: str, min_threshold: float | None, schedule: str | None) -> bool:
    """True when ``label`` is the method's own name, optionally with suffixes that match its settings
    (``global-mp+mt`` for Global MP with a Minimum Threshold); False for a label the user chose."""
    if label == method:
        return True
    rest = label.lower()
    if not rest.startswith(method.lower()):
        return False
    rest = rest[len(method):]
    for sep in "+-_ ":
        rest = rest.replace(sep, " ")
    tokens = set(rest.split())
    if not tokens or not tokens <= _LABEL_SUFFIXES:
        return False
    if "mt" in tokens and not min_threshold:
        return False
    return "gradual" not in tokens or schedule == "gradual"


def display_name(label: str, method: str | None = None, *, min_threshold: float | None = None,
                 schedule: str | None = None, algo: str | None = None) -> str:
    """How a comparison method is shown in summary.md and plot legends (the one place that decides).

    A label the user chose (``{label: my run, method: lamp}``) is shown as written. A label that is
    just the method's name (``global-mp``, ``erk``, ``agent``, or ``global-mp+mt`` for a method with a
    Minimum Threshold) is shown by the method's display name: "Global MP", "ERK", "PPO agent" (from
    ``algo``; "RL agent" when unknown), with " + MT" when ``min_threshold`` is set and " (gradual)"
    for the gradual schedule. A user allocator ``pkg.mod:Class`` is shown as ``Class``.
    """
    method = method or label
    if not _generated_label(label, method, min_threshold, schedule):
        return label
    if method == "agent":
        name = f"{_algo_name(algo)} agent" if algo else "RL agent"
    elif method in METHOD_DISPLAY_NAMES:
        name = METHOD_DISPLAY_NAMES[method]
    elif ":" in method:
        name = method.rsplit(":", 1)[-1]
    else:
        name = label
    if min_threshold:
        name += " + MT"
    if schedule == "gradual":
        name += " (gradual)"
    return name


def agent_algorithms(config: ExperimentConfig | None) -> dict[str, str]:
    """Label -> RL algorithm of every ``agent`` method of ``config.compare`` (its kwargs may override
    ``agent.algo``, dotted ``{"agent.algo": "sac"}`` or nested ``{agent: {algo: sac}}``)."""
    if config is None:
        return {}
    algos: dict[str, str] = {}
    for spec in config.compare.method_specs():
        if spec.method != "agent":
            continue
        kwargs = dict(spec.kwargs)
        nested = kwargs.get("agent")
        algo = kwargs.get("agent.algo") or (nested.get("algo") if isinstance(nested, dict) else None)
        algos[spec.label] = str(algo or config.agent.algo)
    return algos


def method_names(rows: Sequence[dict[str, Any]], config: ExperimentConfig | None = None) -> dict[str, str]:
    """Label -> display name for every label in ``rows`` (see :func:`display_name`); names kept unique."""
    algos = agent_algorithms(config)
    names: dict[str, str] = {}
    for row in rows:
        label = row["label"]
        if label not in names:
            names[label] = display_name(label, row.get("method"), min_threshold=row.get("min_threshold"),
                                        schedule=row.get("schedule"), algo=row.get("algo") or algos.get(label))
    shown = list(names.values())
    return {label: name if shown.count(name) == 1 else f"{name} ({label})" for label, name in names.items()}


def saved_config(directory: str | Path) -> ExperimentConfig | None:
    """The ``config.yaml`` a ``purl compare`` run saved in ``directory`` (None when there is none).

    Only parsed (YAML + schema), never executed: nothing it names is imported. Raises ConfigError
    when it exists but is not a valid config.
    """
    from purl.config import load_config

    path = Path(directory) / "config.yaml"
    return load_config(path) if path.is_file() else None

SUMMARY_COLUMNS: list[tuple[str, str, bool, str]] = [
    # (row key, header, higher is better, format)
    ("after_test_top1", "top-1 after FT (%)", True, "{:.2f}"),
    ("before_test_top1", "top-1 before FT, BN re-estimated (%)", True, "{:.2f}"),
    ("after_test_top5", "top-5 after FT (%)", True, "{:.2f}"),
    ("achieved_sparsity", "sparsity", True, "{:.4f}"),
    ("compression_ratio", "compression", True, "{:.1f}x"),
    ("theoretical_speedup", "FLOPs speedup", True, "{:.2f}x"),
    ("n_collapsed", "collapsed layers", False, "{:.1f}"),
    ("n_near_collapsed", "near-collapsed layers", False, "{:.1f}"),
]
#: extra columns when a grid has channel-granularity rows (re-measured from the slimmed model)
CHANNEL_COLUMNS: list[tuple[str, str, bool, str]] = [
    ("params_ratio", "kept params", False, "{:.3f}"),
    ("flops_ratio", "kept FLOPs", False, "{:.3f}"),
    ("latency_ratio", "CPU latency / dense", False, "{:.2f}"),
]
NOT_RANKED = {"params_ratio", "flops_ratio"}  # set by the budget, not a quality: never bold
REQUIRED_COLUMNS = ("label", "target_sparsity", "seed", "status")
"""Columns every results.csv must have for a report (``purl report`` names the missing ones)."""
SCORE_COLUMNS = ("after_test_top1", "compression_ratio")
"""Columns the finished (``status: ok``) rows must have: what the tables and plots show."""
HEADLINE = "after_test_top1"
"""The score the paired-difference table and the plots compare: test top-1 after fine-tuning."""


def check_columns(rows: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Raise ResultsError naming the columns a report needs that ``rows`` (read from ``path``) lack: a
    REQUIRED_COLUMNS column no row has a value in, or a SCORE_COLUMNS column the finished rows have none of
    (the reader fills a column the file lacks with empty values; a grid whose cells all failed has no scores
    and still gets its failed-cells summary)."""
    from purl.errors import ResultsError

    ok = _ok_rows(rows)
    missing = [c for c in REQUIRED_COLUMNS if all(row.get(c) in (None, "") for row in rows)]
    missing += [c for c in SCORE_COLUMNS if ok and all(row.get(c) in (None, "") for row in ok)]
    if missing:
        raise ResultsError(f"'{path}' lacks the column(s) {', '.join(missing)}: a report needs "
                           f"{', '.join(REQUIRED_COLUMNS + SCORE_COLUMNS)} (the columns `purl compare` writes)")


def _ok_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("status") == "ok"]


def _group(rows: Sequence[dict[str, Any]]) -> dict[float, dict[str, list[dict[str, Any]]]]:
    """target sparsity -> method label -> rows, in first-seen label order."""
    groups: dict[float, dict[str, list[dict[str, Any]]]] = defaultdict(dict)
    for row in rows:
        groups[float(row["target_sparsity"])].setdefault(row["label"], []).append(row)
    return dict(sorted(groups.items()))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def mean_std(values: Sequence[float | None]) -> tuple[float, float]:
    """Mean and sample std of the finite values (std 0 for one value; NaNs when there are none)."""
    finite = [float(v) for v in values if _finite(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0


def by_seed(group: Sequence[dict[str, Any]], key: str) -> dict[int, float]:
    """seed -> ``key`` of a method's rows at one target (finite values only): one side of a paired difference."""
    return {int(r["seed"]): float(r[key]) for r in group if _finite(r.get(key))}


def _leader(stats: dict[str, tuple[float, float]], higher: bool) -> tuple[str, str] | None:
    """(best, runner-up) labels by mean, or None when fewer than two methods have a value."""
    ranked = sorted((label for label in stats if not math.isnan(stats[label][0])),
                    key=lambda label: stats[label][0], reverse=higher)
    return (ranked[0], ranked[1]) if len(ranked) > 1 else None


def _marks(by_label: dict[str, list[dict[str, Any]]], stats: dict[str, dict[str, tuple[float, float]]],
           columns: list[tuple[str, str, bool, str]]) -> dict[str, tuple[str, str]]:
    """column key -> (best label, "bold" | "tie"): bold only when the best's paired lead over the runner-up
    lies outside the 95% interval; "tie" when it does not (or with one seed); no mark where methods agree."""
    marks: dict[str, tuple[str, str]] = {}
    for key, _, higher, fmt in columns:
        if key in NOT_RANKED:
            continue
        column = {label: stats[label][key] for label in stats}
        shown = {fmt.format(m) for m, _ in column.values() if not math.isnan(m)}
        pair = _leader(column, higher)
        if pair is None or len(shown) < 2:
            continue
        best, runner_up = pair
        diff = paired_difference(by_seed(by_label[best], key), by_seed(by_label[runner_up], key))
        marks[key] = (best, "bold" if diff.separated else "tie")
    return marks


def _main_table(ok: Sequence[dict[str, Any]], names: Mapping[str, str]) -> list[str]:
    columns = list(SUMMARY_COLUMNS)
    if any(r.get("flops_ratio") is not None for r in ok):  # channel rows: sparsity is of the budget metric
        columns = [(k, "removed fraction of budget" if k == "achieved_sparsity" else h, hi, f)
                   for k, h, hi, f in columns] + CHANNEL_COLUMNS
    header = ["target", "method", "n"] + [h for _, h, _, _ in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * len(columns)) + "|"]
    for target, by_label in _group(ok).items():
        stats = {label: {key: mean_std([r.get(key) for r in group]) for key, *_ in columns}
                 for label, group in by_label.items()}
        marks = _marks(by_label, stats, columns)
        for label, group in by_label.items():
            cells = [f"{target:g}", names.get(label, label), str(len(group))]
            for key, _, _, fmt in columns:
                mean, std = stats[label][key]
                if math.isnan(mean):
                    cells.append("n/a")
                    continue
                text = fmt.format(mean) + (" ± " + fmt.format(std).rstrip("x") if len(group) > 1 else "")
                mark = marks.get(key)
                if mark and mark[0] == label:
                    text = f"**{text}**" if mark[1] == "bold" else f"{text} (tie)"
                cells.append(text)
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _interval_text(diff: PairedDifference) -> str:
    return "n/a (one seed)" if diff.n < 2 else f"[{diff.low:+.2f}, {diff.high:+.2f}]"


def _verdict(diff: PairedDifference) -> str:
    return "tie" if not diff.separated else ("ahead" if diff.mean > 0 else "behind")


def paired_table(ok: Sequence[dict[str, Any]], reference: str, names: Mapping[str, str]) -> list[str]:
    """Markdown lines: every method against ``reference`` per target, paired by seed (top-1 after FT)."""
    ref_name = names.get(reference, reference)
    lines = [f"## Paired differences vs {ref_name}", "",
             f"Test top-1 after FT of each method minus {ref_name}'s on the same seed (same split, dense model and "
             "fine-tuning data order), in points: mean over seeds, two-sided 95% Student-t interval of the mean, "
             f"and seeds won / tied / lost against {ref_name}. An interval wholly above (below) zero is a lead "
             "(deficit) outside the seed noise.", "",
             "| target | method | pairs | mean diff (points) | 95% interval | W/T/L |",
             "|---|---|---:|---:|---:|---:|"]
    for target, by_label in _group(ok).items():
        if reference not in by_label:
            continue
        ref = by_seed(by_label[reference], HEADLINE)
        for label, group in by_label.items():
            if label == reference:
                continue
            diff = paired_difference(by_seed(group, HEADLINE), ref)
            if diff.n == 0:
                continue
            mean = f"{diff.mean:+.2f}"
            lines.append(f"| {target:g} | {names.get(label, label)} | {diff.n} | "
                         f"{f'**{mean}**' if diff.separated else mean} | {_interval_text(diff)} | {diff.wtl} |")
    return lines


def best_baseline(baselines: Mapping[str, Sequence[dict[str, Any]]]) -> str:
    """The label whose rows (one target's) have the highest mean test top-1 after FT: the strongest baseline."""
    return max(baselines, key=lambda label: mean_std([r.get(HEADLINE) for r in baselines[label]])[0])


def best_baseline_table(ok: Sequence[dict[str, Any]], names: Mapping[str, str]) -> list[str]:
    """Markdown lines: every agent against the *best* baseline of each target (:func:`best_baseline` of the
    non-agent methods there), paired by seed, and how often the agent reported its prior; none without a pair."""
    header = ["## Agent vs the best baseline", "",
             "Each agent's test top-1 after FT minus that of the target's best baseline (the highest mean among the "
             "methods that are not agents; chosen on the test split, so this is the hardest reference, not a "
             "decision any method made), paired by seed: mean, 95% Student-t interval, W/T/L; 'prior reported': "
             "cells whose reported allocation is the agent's prior (`policy_source`).", "",
             "| target | agent | best baseline | pairs | mean diff (points) | 95% interval | W/T/L | verdict | "
             "prior reported |", "|---|---|---|---:|---:|---:|---:|---|---:|"]
    lines: list[str] = []
    for target, by_label in _group(ok).items():
        baselines = {label: group for label, group in by_label.items() if group[0].get("method") != "agent"}
        agents = {label: group for label, group in by_label.items() if group[0].get("method") == "agent"}
        if not baselines or not agents:
            continue
        best = best_baseline(baselines)
        for label, group in agents.items():
            diff = paired_difference(by_seed(group, HEADLINE), by_seed(baselines[best], HEADLINE))
            if diff.n == 0:
                continue
            verdict = _verdict(diff)
            prior = sum(r.get("policy_source") == "prior" for r in group)
            lines.append(f"| {target:g} | {names.get(label, label)} | {names.get(best, best)} | {diff.n} | "
                         f"{diff.mean:+.2f} | {_interval_text(diff)} | {diff.wtl} | {verdict} | "
                         f"{prior} of {len(group)} |")
    return header + lines if lines else []


def prior_table(ok: Sequence[dict[str, Any]], names: Mapping[str, str]) -> list[str]:
    """Markdown lines: every agent against *its own prior* and that prior against the best baseline, per target.

    The prior of a seed's agent cell is the baseline cell of the label it recorded (``prior_method``: what
    ``env.prior: auto`` chose on the reward split, or the named prior), on the same seed; agent cells whose prior
    has no baseline cell in the grid are left out. The two differences split the agent's gap to the best baseline
    (:func:`best_baseline_table`) into what the search added (agent - prior) and what the prior choice cost
    (prior - best baseline); 'best chosen' counts the seeds whose prior had that seed's highest baseline score."""
    header = ["## Agent vs its prior", "",
              "Test top-1 after FT, paired by seed: the agent minus the baseline cell its prior came from "
              "(`prior_method`, chosen on the reward split), and that prior minus the target's best baseline (as "
              "above); mean, 95% Student-t interval, W/T/L. 'best chosen': seeds on which the prior was that seed's "
              "best baseline (ties count).", "",
              "| target | agent | priors (seeds) | pairs | agent - prior | 95% interval | W/T/L | verdict | "
              "prior - best baseline | 95% interval | best chosen |",
              "|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    lines: list[str] = []
    for target, by_label in _group(ok).items():
        baselines = {label: group for label, group in by_label.items() if group[0].get("method") != "agent"}
        if not baselines:
            continue
        scores = {label: by_seed(group, HEADLINE) for label, group in baselines.items()}
        best = scores[best_baseline(baselines)]
        for label, group in by_label.items():
            if group[0].get("method") != "agent":
                continue
            priors = {int(r["seed"]): r.get("prior_method") for r in group}
            prior = {seed: scores[p][seed] for seed, p in priors.items() if p in scores and seed in scores[p]}
            if not prior:
                continue
            search = paired_difference(by_seed(group, HEADLINE), prior)
            choice = paired_difference(prior, best)
            hits = sum(prior[seed] >= max(v[seed] for v in scores.values() if seed in v) - TIE_TOLERANCE
                       for seed in prior)
            chosen = ", ".join(f"{names.get(p, p)} {n}" for p, n in
                               sorted(Counter(priors[seed] for seed in prior).items(), key=lambda kv: -kv[1]))
            lines.append(f"| {target:g} | {names.get(label, label)} | {chosen} | {search.n} | {search.mean:+.2f} | "
                         f"{_interval_text(search)} | {search.wtl} | {_verdict(search)} | {choice.mean:+.2f} | "
                         f"{_interval_text(choice)} | {hits} of {len(prior)} |")
    return header + lines if lines else []


def cost_table(ok: Sequence[dict[str, Any]], names: Mapping[str, str]) -> list[str]:
    """Median wall time of a cell per method (search, fine-tuning and evaluation: the row's ``wall_time_s``), and
    its ratio to the median cell of every method that is not an agent (the grid's baselines, same load)."""
    times: dict[str, list[float]] = defaultdict(list)
    for r in ok:
        if _finite(r.get("wall_time_s")):
            times[r["label"]].append(float(r["wall_time_s"]))
    baseline = [float(r["wall_time_s"]) for r in ok if r.get("method") != "agent" and _finite(r.get("wall_time_s"))]
    if not times:
        return []
    reference = statistics.median(baseline) if baseline else None
    lines = ["## Cell cost", "", "Median wall time of one cell (pruning or search, fine-tuning, evaluation), over "
             "every target and seed; the ratio is to the median baseline cell of this grid.", "",
             "| method | cells | median cell (s) | x median baseline cell |", "|---|---:|---:|---:|"]
    for label, values in times.items():
        median = statistics.median(values)
        ratio = f"{median / reference:.1f}x" if reference else "-"
        lines.append(f"| {names.get(label, label)} | {len(values)} | {median:.1f} | {ratio} |")
    return lines


def default_reference(ok: Sequence[dict[str, Any]]) -> str | None:
    """The label paired differences are taken against when none is given (or it has no finished rows):
    ``global-mp`` when present, else the first label (None without rows)."""
    labels = list(dict.fromkeys(r["label"] for r in ok))
    return "global-mp" if "global-mp" in labels else (labels[0] if labels else None)


def summary_markdown(rows: Sequence[dict[str, Any]], title: str = "Comparison summary",
                     names: Mapping[str, str] | None = None, reference: str | None = None) -> str:
    """Mean +- std per method and target; best per column in bold only when its lead is outside the noise;
    then every method's paired difference against ``reference`` (default: ``global-mp`` when present).

    ``names`` maps labels to the names shown (default: :func:`method_names` of ``rows``).
    """
    names = dict(names) if names is not None else method_names(rows)
    ok = _ok_rows(rows)
    lines = [f"# {title}", "",
             "Mean ± std over seeds (n = number of seeds). Accuracies on the test split, which no method used for "
             "any decision. Per target, the best mean of a column is **bold** only when its paired lead over the "
             "runner-up (same seeds) lies outside the 95% Student-t interval; otherwise it is marked (tie) (always "
             "with one seed). \"before FT\": right after pruning, BatchNorm statistics re-estimated on the reward's "
             "fixed train batches (a pruned network scored with the dense statistics sits near chance).", ""]
    lines += _main_table(ok, names)
    labels = list(dict.fromkeys(r["label"] for r in ok))
    if reference is None:
        reference = default_reference(ok)
    if reference in labels and len(labels) > 1:
        lines += [""] + paired_table(ok, reference, names)
    for table in (best_baseline_table(ok, names), prior_table(ok, names)):
        if table:
            lines += [""] + table
    cost = cost_table(ok, names)
    if cost:
        lines += [""] + cost
    failed = [r for r in rows if r.get("status") != "ok"]
    if failed:
        lines += ["", "## Failed cells", ""]
        for r in failed:
            name = names.get(r["label"], r["label"])
            lines.append(f"- {name} @ {float(r['target_sparsity']):g}, seed {r['seed']}: {r.get('error')}")
    agent = [r for r in ok if r.get("search_env_steps")]
    if agent:
        lines += ["", "## Agent search cost", "", "| target | method | seed | episodes | env steps | evaluations | "
                  "search time (s) | warm-started from |", "|---|---|---:|---:|---:|---:|---:|---|"]
        for r in agent:
            name = names.get(r["label"], r["label"])
            lines.append(f"| {float(r['target_sparsity']):g} | {name} | {r['seed']} | {r['search_episodes']} "
                         f"| {r['search_env_steps']} | {r['search_evaluations']} "
                         f"| {float(r['search_wall_time_s']):.1f} | {r.get('warm_started_from') or '-'} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- plots


def _pyplot():  # noqa: ANN202 - matplotlib.pyplot, imported lazily (the CLI starts faster without it)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, stem: Path) -> dict[str, Path]:
    """Write ``fig`` as ``stem.<fmt>`` for every format in PLOT_FORMATS, each atomically; close it.

    SVGs carry no date and fixed element ids, so regenerating an unchanged report gives identical files.
    """
    plt = _pyplot()
    written: dict[str, Path] = {}
    try:
        with plt.rc_context({"svg.hashsalt": "purl-report"}):
            for fmt in PLOT_FORMATS:
                path = stem.with_suffix(f".{fmt}")
                metadata = {"Date": None} if fmt == "svg" else None
                atomic_write_bytes(path, lambda handle, fmt=fmt, metadata=metadata: fig.savefig(
                    handle, format=fmt, dpi=120, bbox_inches="tight", metadata=metadata))
                written[fmt] = path
    finally:
        plt.close(fig)
    return written


def _method_series(rows: Sequence[dict[str, Any]], x_key: str) -> dict[str, list[tuple[float, float, float]]]:
    """label -> [(mean x, mean top-1, half-width of its 95% t-interval over seeds)] sorted by x."""
    series: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for by_label in _group(rows).values():
        for label, group in by_label.items():
            x, _ = mean_std([r.get(x_key) for r in group])
            ys = list(by_seed(group, HEADLINE).values())
            if not math.isnan(x) and ys:
                series[label].append((x, statistics.fmean(ys), interval_half_width(ys)))
    return {label: sorted(points) for label, points in series.items()}


def _legend_outside(ax: Any, fontsize: int = 8) -> None:
    """Legend to the right of the axes, so it never covers data."""
    ax.legend(fontsize=fontsize, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)


def _accuracy_plot(rows: Sequence[dict[str, Any]], x_key: str, xlabel: str, base: int, stem: Path, *,
                   title: str, names: Mapping[str, str], x_format: str) -> dict[str, Path]:
    """Top-1 after fine-tuning (mean, 95% t-interval over seeds) against ``x_key`` on a log axis increasing to the
    right."""
    from matplotlib.ticker import EngFormatter, FixedLocator, FuncFormatter, NullFormatter

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    for label, points in _method_series(rows, x_key).items():
        xs, ys, dys = zip(*points, strict=True)
        ax.errorbar(xs, ys, yerr=dys, marker="o", capsize=3, label=names.get(label, label))
    dense = [float(r["dense_test_top1"]) for r in rows if r.get("dense_test_top1") is not None]
    if dense:
        ax.axhline(statistics.fmean(dense), color="gray", linestyle="--", linewidth=1, label="dense model")
    ax.set_xscale("log", base=base)
    if x_format == "ratio":  # ticks at the grid's own compression ratios (2x, 4x, ... or 5x, 10x, ...)
        ticks = sorted({round(1.0 / (1.0 - float(r["target_sparsity"])), 1) for r in rows
                        if float(r["target_sparsity"]) < 1.0})
        if 0 < len(ticks) <= 12:
            ax.xaxis.set_major_locator(FixedLocator(ticks))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}x"))
    else:  # 1M, 200k: minor ticks labelled only when the data span less than a decade
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        xs_all = [float(r[x_key]) for r in rows if r.get(x_key)]
        narrow = bool(xs_all) and max(xs_all) < 10 * min(xs_all)
        ax.xaxis.set_minor_formatter(EngFormatter(sep="") if narrow else NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test top-1 after fine-tuning (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    _legend_outside(ax)
    return _save(fig, stem)


def paired_differences_plot(rows: Sequence[dict[str, Any]], reference: str, stem: Path, *,
                            names: Mapping[str, str]) -> dict[str, Path] | None:
    """Each method's paired top-1 difference to ``reference`` (mean, 95% t-interval over seeds) against the
    compression ratio; a zero line; None when no method pairs with the reference."""
    from matplotlib.ticker import FuncFormatter

    series: dict[str, list[tuple[float, float, float, float]]] = defaultdict(list)
    for target, by_label in _group(rows).items():
        if reference not in by_label or target >= 1.0:
            continue
        ref = by_seed(by_label[reference], HEADLINE)
        for label, group in by_label.items():
            diff = paired_difference(by_seed(group, HEADLINE), ref)
            if label != reference and diff.n:
                low, high = (diff.mean, diff.mean) if diff.n < 2 else (diff.low, diff.high)
                series[label].append((1.0 / (1.0 - target), diff.mean, diff.mean - low, high - diff.mean))
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    for label, points in series.items():
        xs, ys, lo, hi = zip(*sorted(points), strict=True)
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=names.get(label, label))
    ax.axhline(0.0, color="gray", linestyle="--", linewidth=1, label=names.get(reference, reference))
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}x"))
    ax.set_xlabel("target compression ratio (log2 scale; right = more pruned)")
    ax.set_ylabel(f"top-1 after FT minus {names.get(reference, reference)} (points)")
    ax.set_title("Paired difference to the reference, same seeds (mean, 95% interval)")
    ax.grid(True, which="both", alpha=0.3)
    _legend_outside(ax)
    return _save(fig, stem)


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


def layer_profile_plot(rows: Sequence[dict[str, Any]], target: float, path: Path,
                       names: Mapping[str, str] | None = None) -> dict[str, Path]:
    """Per-layer sparsity of every method at ``target`` (mean over seeds), one group of bars per layer.

    The legend sits below the axes (outside the bars); writes ``path`` and its siblings in PLOT_FORMATS.
    """
    plt = _pyplot()
    by_label = _group(_ok_rows(rows)).get(target, {})
    names = dict(names) if names is not None else method_names(rows)
    fig, ax = plt.subplots(figsize=(max(7, 0.45 * _n_layers(by_label) + 3), 5), layout="constrained")
    width = 0.8 / max(len(by_label), 1)
    layers: list[str] = []
    for i, (label, group) in enumerate(by_label.items()):
        layers = layers or list(group[0]["layer_sparsity"] or {})
        ys = [statistics.fmean(float(r["layer_sparsity"][n]) for r in group) for n in layers]
        ax.bar([j + i * width for j in range(len(layers))], ys, width=width, label=names.get(label, label))
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(layers))])
    ax.set_xticklabels(layers, rotation=60, ha="right", rotation_mode="anchor", fontsize=7)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("prunable layer (network order)")
    ax.set_ylabel("layer sparsity (fraction of weights pruned)")
    ax.set_title(f"Per-layer sparsity at target global sparsity {target:g} (mean over seeds)")
    ax.grid(True, axis="y", alpha=0.3)
    if by_label:
        fig.legend(loc="outside lower center", ncol=min(len(by_label), 4), fontsize=8, frameon=False)
    return _save(fig, Path(path))


def _n_layers(by_label: dict[str, list[dict[str, Any]]]) -> int:
    return max((len(g[0]["layer_sparsity"] or {}) for g in by_label.values()), default=0)


def learning_curve_plot(rows: Sequence[dict[str, Any]], path: Path, window: int = 20,
                        names: Mapping[str, str] | None = None) -> dict[str, Path] | None:
    """Agent episode return against env steps (moving average), one line per agent cell; None without agents."""
    curves = [(r, r["learning_curve"]) for r in _ok_rows(rows) if r.get("learning_curve")]
    if not curves:
        return None
    names = dict(names) if names is not None else method_names(rows)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    # one colour per (method, target), one line style per seed: many cells stay tellable apart
    colours: dict[tuple[str, float], Any] = {}
    seeds = sorted({int(row["seed"]) for row, _ in curves})
    styles = ["-", "--", ":", "-."]
    for row, curve in curves:
        steps = [float(p[0]) for p in curve]
        returns = [float(p[1]) for p in curve]
        smooth = [statistics.fmean(returns[max(0, i - window + 1):i + 1]) for i in range(len(returns))]
        name = names.get(row["label"], row["label"])
        key = (row["label"], float(row["target_sparsity"]))
        colour = colours.setdefault(key, f"C{len(colours) % 10}")
        ax.plot(steps, smooth, color=colour, linestyle=styles[seeds.index(int(row["seed"])) % len(styles)],
                label=f"{name} @ {float(row['target_sparsity']):g}, seed {row['seed']}")
    ax.set_xlabel("env steps (one step = one layer pruned)")
    ax.set_ylabel(f"episode return (moving average of {window})")
    ax.set_title("Agent learning curves (target sparsity, seed)")
    ax.grid(True, alpha=0.3)
    _legend_outside(ax, fontsize=7)
    return _save(fig, Path(path))


def write_report(directory: str | Path, *, profile_sparsity: float | None = None, title: str | None = None,
                 config: ExperimentConfig | None = None) -> dict[str, Path]:
    """Regenerate ``summary.md`` and the plots (PNG + SVG) in ``directory`` from its ``results.csv``.

    ``config`` is the comparison's config; when None the folder's saved ``config.yaml`` is used if it is
    valid (a warning otherwise). It supplies ``compare.profile_sparsity`` (``profile_sparsity`` wins when
    given) and the agents' algorithms for their display names. Returns name -> path of every file written
    (``<plot>`` for the PNG, ``<plot>_svg`` for the SVG).
    """
    directory = Path(directory)
    if config is None:
        try:
            config = saved_config(directory)
        except PurlError as exc:
            warnings.warn(f"ignoring {directory / 'config.yaml'}: {exc}", stacklevel=2)
    if profile_sparsity is None and config is not None:
        profile_sparsity = config.compare.profile_sparsity
    rows = ResultsTable.read(directory / "results.csv")
    check_columns(rows, directory / "results.csv")
    names = method_names(rows, config)
    ok = _ok_rows(rows)
    reference = config.compare.reference_label() if config is not None else None
    if reference not in {r["label"] for r in ok}:
        reference = default_reference(ok)
    written = {"summary": write_text(directory / "summary.md",
                                     summary_markdown(rows, title or "Comparison summary", names, reference))}
    plots: dict[str, dict[str, Path] | None] = {}
    if ok:
        plots["accuracy_vs_compression"] = _accuracy_plot(
            ok, "compression_ratio",
            "compression ratio = dense / non-zero weights (log2 scale; right = more pruned)", 2,
            directory / "accuracy_vs_compression", title="Test accuracy vs compression (mean, 95% interval over seeds)",
            names=names, x_format="ratio")
        plots["accuracy_vs_flops"] = _accuracy_plot(
            ok, "sparse_flops",
            "FLOPs per sample after pruning, in MACs (log10 scale, increasing to the right; left = more pruned)",
            10, directory / "accuracy_vs_flops", title="Test accuracy vs FLOPs (mean, 95% interval over seeds)",
            names=names, x_format="eng")
        target = pick_profile_sparsity(ok, profile_sparsity)
        if target is not None:
            plots["layer_profile"] = layer_profile_plot(ok, target, directory / "layer_profile", names)
        plots["learning_curve"] = learning_curve_plot(ok, directory / "learning_curve", names=names)
        if reference is not None:
            plots["paired_differences"] = paired_differences_plot(ok, reference, directory / "paired_differences",
                                                                  names=names)
    for name, files in plots.items():
        if files is None:
            continue
        written[name] = files["png"]
        for fmt, path in files.items():
            if fmt != "png":
                written[f"{name}_{fmt}"] = path
    return written
