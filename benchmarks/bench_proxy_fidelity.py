"""How well do cheap search signals predict an allocation's accuracy after the real fine-tuning budget?

For one task and target sparsity it builds a set of allocations: the baselines' (Global MP with and
without MT, ERK, LAMP, uniform) and ``--perturbed`` random perturbations of one baseline's layer profile
(``--around``, Global MP by default) in logit space (``logit(s_l) + sigma * z``, rescaled by the
``layerwise`` allocator to the exact target).
Every allocation is then

* scored by each cheap proxy, timed: one-shot reward-split top-1 (dense BatchNorm statistics), the same
  after BatchNorm re-estimation (the env's reward signal), minus the reward-split loss after it, and
  ``k``-step masked fine-tunes for each ``--steps`` k (``agents.selection.short_finetune_score``: the
  result selection's re-ranking proxy), and
* fine-tuned with the config's real budget (``finetune.epochs``, :func:`purl.pipeline.finetune_and_measure`,
  the compare cells' tail) and measured on the test split: the truth.

It reports each proxy's cost (median seconds per allocation) and its Spearman and Kendall rank correlation
with the truth, with 95% percentile-bootstrap intervals over allocations. The proxies see only the train and
reward-validation splits; the test split is only the truth.

    python benchmarks/bench_proxy_fidelity.py --model lenet5 --sparsity 0.98 --perturbed 30

Writes ``benchmarks/results/proxy_fidelity/<model>-s<sparsity>/``: ``allocations.csv`` (one row per
allocation: its layer sparsities, every proxy, the truth), ``fidelity.csv`` / ``fidelity.md`` (the table).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

from _common import RESULTS, build, log, markdown_table, median, model_label, set_threads, task_config, write_csv

BASELINES = {"global-mp": ("global-mp", None), "global-mp+mt": ("global-mp", 0.05), "erk": ("erk", None),
             "lamp": ("lamp", None), "uniform": ("uniform", None)}


def baseline_allocations(task: Any, sparsity: float) -> dict[str, dict[str, float]]:
    """Each baseline's layer sparsities at ``sparsity`` (the task's constraints; MT 0.05% for global-mp+mt)."""
    from purl.baselines import get_allocator
    from purl.pruning.constraints import Constraints

    found = {}
    for label, (name, mt) in BASELINES.items():
        _, masks = task.fresh_copy()
        constraints = Constraints.from_config(task.config.constraints, min_threshold=mt)
        get_allocator(name).prune(masks, sparsity, constraints)
        numels = masks.numels()
        found[label] = {layer: count / numels[layer] for layer, count in masks.pruned().items()}
    return found


def perturbed_allocations(task: Any, prior: dict[str, float], sparsity: float, count: int,
                          sigmas: list[float], seed: int) -> dict[str, dict[str, float]]:
    """``count`` random logit-space perturbations of ``prior`` (sigmas cycled), each at exactly ``sparsity``."""
    import torch

    from purl.baselines import get_allocator
    from purl.errors import PruningError
    from purl.pruning.constraints import Constraints

    gen = torch.Generator().manual_seed(seed)
    names = sorted(prior)
    logits = torch.tensor([math.log(max(prior[n], 1e-4) / max(1 - prior[n], 1e-4)) for n in names])
    found: dict[str, dict[str, float]] = {}
    attempt = 0
    while len(found) < count and attempt < 10 * count:
        sigma = sigmas[attempt % len(sigmas)]
        attempt += 1
        profile = torch.sigmoid(logits + sigma * torch.randn(len(names), generator=gen)).tolist()
        _, masks = task.fresh_copy()
        try:
            get_allocator("layerwise", sparsities=dict(zip(names, profile, strict=True)), rescale=True).prune(
                masks, sparsity, Constraints.from_config(task.config.constraints))
        except PruningError:
            continue  # a profile the constraints cannot rescale to the target: draw another
        numels = masks.numels()
        found[f"perturbed-{len(found):02d}-sigma{sigma:g}"] = {
            layer: c / numels[layer] for layer, c in masks.pruned().items()}
    return found


def one_shot_scores(task: Any, sparsities: dict[str, float], val_samples: int | None) -> dict[str, float]:
    """Reward-split top-1 before and after BatchNorm re-estimation, and minus the loss after it."""
    import torch
    import torch.nn.functional as F

    from purl.agents.policy import apply_policy
    from purl.config import AUTO_BN_BATCHES
    from purl.evaluator import calibration_batches, has_batchnorm
    from purl.training import evaluate_tensors, recalibrate_batchnorm

    cfg = task.config
    model, _ = apply_policy(task, sparsities)
    model.eval()
    x, y = task.data.tensors("val", task.device, val_samples)
    start = time.perf_counter()
    raw = evaluate_tensors(model, x, y, batch_size=cfg.data.eval_batch_size).top1
    t_raw = time.perf_counter() - start
    start = time.perf_counter()
    if has_batchnorm(model):
        with torch.no_grad():
            recalibrate_batchnorm(model, calibration_batches(task.data, task.device, AUTO_BN_BATCHES,
                                                             cfg.data.batch_size))
    with torch.no_grad():
        logits = torch.cat([model(x[i:i + 1024]) for i in range(0, len(x), 1024)])
    bn = float((logits.argmax(1) == y).float().mean())
    loss = float(F.cross_entropy(logits, y))
    t_bn = time.perf_counter() - start
    return {"oneshot": 100 * raw, "oneshot_s": t_raw, "oneshot_bn": 100 * bn, "oneshot_bn_s": t_bn,
            "neg_loss": -loss, "neg_loss_s": t_bn}


def truth(task: Any, sparsities: dict[str, float], seed: int) -> tuple[float, float]:
    """Test top-1 after the config's fine-tuning (the compare cells' tail), and its seconds."""
    from purl.agents.policy import apply_policy
    from purl.pipeline import finetune_and_measure

    start = time.perf_counter()
    model, masks = apply_policy(task, sparsities)
    row = finetune_and_measure(task, model, masks, seed=seed, progress=False, measure_before=False)
    return float(row["after_test_top1"]), time.perf_counter() - start


def rank_correlations(proxy: list[float], target: list[float], resamples: int, seed: int) -> dict[str, float]:
    """Spearman and Kendall (tau-b) with 95% percentile-bootstrap intervals over allocations."""
    import numpy as np
    from scipy import stats

    p, t = np.asarray(proxy, float), np.asarray(target, float)
    out = {"spearman": float(stats.spearmanr(p, t).statistic), "kendall": float(stats.kendalltau(p, t).statistic)}
    rng = np.random.default_rng(seed)
    boot: dict[str, list[float]] = {"spearman": [], "kendall": []}
    for _ in range(resamples):
        idx = rng.integers(0, len(p), len(p))
        if np.ptp(p[idx]) == 0 or np.ptp(t[idx]) == 0:
            continue  # a resample without spread has no rank correlation
        boot["spearman"].append(float(stats.spearmanr(p[idx], t[idx]).statistic))
        boot["kendall"].append(float(stats.kendalltau(p[idx], t[idx]).statistic))
    for key, values in boot.items():
        lo, hi = np.nanpercentile(values, [2.5, 97.5]) if values else (math.nan, math.nan)
        out[f"{key}_lo"], out[f"{key}_hi"] = float(lo), float(hi)
    return out


def baseline_pick(rows: list[dict[str, Any]], key: str) -> tuple[str, float]:
    """The baseline that proxy ``key`` ranks first, and its truth minus the best baseline's truth (<= 0)."""
    baselines = [r for r in rows if r["allocation"] in BASELINES]
    picked = max(baselines, key=lambda r: r[key])
    best = max(r["truth_test_top1"] for r in baselines)
    return picked["allocation"], picked["truth_test_top1"] - best


def fidelity_table(rows: list[dict[str, Any]], proxies: list[tuple[str, str]], margin: float, resamples: int,
                   seed: int) -> list[dict[str, Any]]:
    """One row per proxy: cost, rank correlations over all allocations and over the competitive ones
    (truth within ``margin`` points of the best), and the baseline it would pick as the prior."""
    target = [r["truth_test_top1"] for r in rows]
    competitive = [r for r in rows if r["truth_test_top1"] >= max(target) - margin]
    table = []
    for key, what in proxies:
        corr = rank_correlations([r[key] for r in rows], target, resamples, seed)
        close = rank_correlations([r[key] for r in competitive], [r["truth_test_top1"] for r in competitive],
                                  resamples, seed) if len(competitive) >= 3 else {}
        close = {f"competitive_{k}": v for k, v in close.items()}
        shown = {f"{m}_ci": f"{corr[m]:+.2f} [{corr[m + '_lo']:+.2f}, {corr[m + '_hi']:+.2f}]"
                 for m in ("spearman", "kendall")}
        if close:
            c = "competitive_spearman"
            shown[f"{c}_ci"] = f"{close[c]:+.2f} [{close[c + '_lo']:+.2f}, {close[c + '_hi']:+.2f}]"
        picked, regret = baseline_pick(rows, key)
        top = max(rows, key=lambda r: r[key])  # what a search that keeps the proxy's best candidate reports
        table.append({"proxy": what, "median_s": median(r[f"{key}_s"] for r in rows), **corr, **close, **shown,
                      "baseline_picked": picked, "baseline_regret": round(regret, 2), "top_pick": top["allocation"],
                      "top_pick_regret": round(top["truth_test_top1"] - max(target), 2)})
    return table


def stored_rows(path: Path) -> list[dict[str, Any]]:
    """Every row of an earlier run's ``allocations.csv``: numbers as floats, ``layer_sparsity`` as a dict."""
    import json

    from _common import read_csv

    if not path.is_file():
        return []
    rows = []
    for raw in read_csv(path):
        row: dict[str, Any] = {"allocation": raw.get("allocation", "")}
        for key, value in raw.items():
            if key not in ("allocation", "layer_sparsity"):
                row[key] = float(value)
        row["layer_sparsity"] = json.loads(raw.get("layer_sparsity") or "{}")
        rows.append(row)
    return rows


def resumed_rows(path: Path, allocations: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """Rows of an earlier run's ``allocations.csv`` whose allocation is unchanged (same label, same sparsities).

    A run cut short (a session ends, a machine is reclaimed) continues where it stopped; a row whose
    allocation differs (another seed, config or sigma) is measured again rather than trusted.
    """
    return [row for row in stored_rows(path) if row["allocation"] in allocations
            and row["layer_sparsity"] == {n: round(s, 6) for n, s in allocations[row["allocation"]].items()}]


def measure(task: Any, args: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    """Build the allocations, score each by every proxy and the truth (resuming if asked); the rows."""
    from purl.agents.selection import short_finetune_score

    val_samples = task.config.env.val_samples
    allocations = baseline_allocations(task, args.sparsity)
    allocations.update(perturbed_allocations(task, allocations[args.around], args.sparsity, args.perturbed,
                                             args.sigmas, args.seed))
    rows = resumed_rows(out / "allocations.csv", allocations) if args.resume else []
    done = {r["allocation"] for r in rows}
    if done:
        log(f"resuming: {len(done)} of {len(allocations)} allocations already measured")
    for i, (label, sparsities) in enumerate(allocations.items(), 1):
        if label in done:
            continue
        row: dict[str, Any] = {"allocation": label, **one_shot_scores(task, sparsities, val_samples)}
        for k in args.steps:
            start = time.perf_counter()
            row[f"ft{k}"] = 100 * short_finetune_score(task, sparsities, steps=k, seed=args.seed,
                                                       val_samples=val_samples)
            row[f"ft{k}_s"] = time.perf_counter() - start
        row["truth_test_top1"], row["truth_s"] = truth(task, sparsities, args.seed)
        row["layer_sparsity"] = {n: round(s, 6) for n, s in sparsities.items()}
        rows.append(row)
        log(f"[{i}/{len(allocations)}] {label}: truth {row['truth_test_top1']:.2f}%, one-shot+BN "
            f"{row['oneshot_bn']:.1f}%, ft{args.steps[-1]} {row[f'ft{args.steps[-1]}']:.1f}%")
        write_csv(out / "allocations.csv", rows)  # after every allocation: an interrupted run keeps its rows
    return rows


def rows_named(rows: list[dict[str, Any]], labels: list[str]) -> dict[str, dict[str, Any]]:
    """The stored rows of ``labels``, in that order; an unknown label exits naming the stored ones."""
    by_label = {r["allocation"]: r for r in rows}
    if unknown := [label for label in labels if label not in by_label]:
        raise SystemExit(f"--recheck: no stored allocation {unknown}; stored: {sorted(by_label)}")
    return {label: by_label[label] for label in labels}


def recheck(task: Any, chosen: dict[str, dict[str, Any]], seeds: list[int], out: Path) -> list[dict[str, Any]]:
    """Fine-tune stored allocations again with other fine-tuning seeds: is a truth gap order noise?

    Writes ``recheck.csv`` (label, seed, truth) after every fine-tune; each label's stored truth is listed with them.
    """
    found = []
    for label, row in chosen.items():
        found.append({"allocation": label, "seed": "stored", "truth_test_top1": row["truth_test_top1"]})
        for seed in seeds:
            top1, seconds = truth(task, row["layer_sparsity"], seed)
            found.append({"allocation": label, "seed": seed, "truth_test_top1": top1})
            log(f"recheck {label}, fine-tuning seed {seed}: truth {top1:.2f}% ({seconds:.0f} s)")
            write_csv(out / "recheck.csv", found)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet5", help="lenet5, resnet20 or a config YAML")
    parser.add_argument("--sparsity", type=float, default=0.98)
    parser.add_argument("--perturbed", type=int, default=30, help="random allocations besides the baselines")
    parser.add_argument("--around", default="global-mp", choices=sorted(BASELINES),
                        help="the baseline whose layer profile the perturbations start from")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 40, 100, 200, 500])
    parser.add_argument("--seed", type=int, default=0, help="task, fine-tuning and proxy seed")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--margin", type=float, default=3.0,
                        help="points below the best truth that still count as a competitive allocation")
    parser.add_argument("--resume", action="store_true",
                        help="keep the rows of an earlier run's allocations.csv whose allocation is unchanged")
    parser.add_argument("--table-only", action="store_true",
                        help="tabulate the rows already in allocations.csv (as --resume keeps them); measure nothing")
    parser.add_argument("--recheck", nargs="+", default=None, metavar="LABEL",
                        help="fine-tune these stored allocations again with --recheck-seeds; writes recheck.csv")
    parser.add_argument("--recheck-seeds", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    set_threads(args.threads)

    config = task_config(args.model, [f"seed={args.seed}", *args.set])
    around = "" if args.around == "global-mp" else f"-around-{args.around}"
    out = args.out or RESULTS / "proxy_fidelity" / f"{model_label(args.model)}-s{args.sparsity:g}{around}"
    out.mkdir(parents=True, exist_ok=True)
    if args.recheck:  # labels checked before the task is built (a dense model may need training first)
        chosen = rows_named(stored_rows(out / "allocations.csv"), args.recheck)
        recheck(build(config), chosen, args.recheck_seeds, out)
        return
    if args.table_only:
        rows = stored_rows(out / "allocations.csv")
        if len(rows) < 3:
            raise SystemExit(f"--table-only: {out / 'allocations.csv'} holds {len(rows)} rows; need 3 or more")
        measured = sorted(int(c[2:]) for c in rows[0] if c.startswith("ft") and c[2:].isdigit())
        if missing := [k for k in args.steps if k not in measured]:
            raise SystemExit(f"--table-only: allocations.csv has no {missing}-step proxy; --steps from {measured}")
    else:
        rows = measure(build(config), args, out)

    proxies = [("oneshot", "one-shot top-1, dense BN statistics"), ("oneshot_bn", "one-shot top-1, BN re-estimated"),
               ("neg_loss", "minus reward-split loss, BN re-estimated")]
    proxies += [(f"ft{k}", f"{k}-step fine-tune, BN re-estimated") for k in args.steps]
    table = fidelity_table(rows, proxies, args.margin, args.resamples, args.seed)
    write_csv(out / "fidelity.csv", table)
    target = [r["truth_test_top1"] for r in rows]
    competitive = sum(t >= max(target) - args.margin for t in target)
    truth_s = median(r["truth_s"] for r in rows)
    n_base = sum(r["allocation"] in BASELINES for r in rows)
    header = (f"# Proxy fidelity: {model_label(args.model)} at {args.sparsity:g}, {len(rows)} allocations "
              f"({n_base} baselines + {len(rows) - n_base} perturbed around {args.around}), seed {args.seed}\n\n"
              f"Truth: test top-1 after {config.finetune.epochs} fine-tuning epochs (median {truth_s:.1f} s per "
              f"allocation), range {min(target):.2f}-{max(target):.2f}%. Rank correlation of each proxy with it, "
              f"95% percentile-bootstrap interval over allocations ({args.resamples} resamples); 'competitive': "
              f"the {competitive} allocations within {args.margin:g} points of the best truth (the ones a search "
              f"must tell apart). 'Baseline picked': the baseline the proxy ranks first among the "
              f"{len(BASELINES)} (what `env.prior: auto` does), and its truth minus the best baseline's; 'top pick': "
              f"the allocation it ranks first among all (what a search keeping its best candidate reports), and its "
              f"truth minus the best truth.\n\n")
    text = header + markdown_table(table, [("proxy", "proxy"), ("median_s", "cost (s, median)"),
                                           ("spearman_ci", "Spearman"), ("kendall_ci", "Kendall"),
                                           ("competitive_spearman_ci", "Spearman, competitive"),
                                           ("baseline_picked", "baseline picked"),
                                           ("baseline_regret", "its truth minus the best baseline's"),
                                           ("top_pick_regret", "top pick's truth minus the best")])
    (out / "fidelity.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
