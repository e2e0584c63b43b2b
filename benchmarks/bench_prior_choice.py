"""How well does ``env.prior: auto`` pick the best baseline, and would a longer or repeated proxy pick better?

``env.prior: auto`` scores every ``env.prior_candidates`` allocator with the re-ranking proxy
(``agent.rerank_steps`` masked SGD steps, BatchNorm re-estimated, reward split; :func:`envs.prior.choose_prior`)
and makes the best one the agent's prior. An agent that reports its prior inherits the choice, so a miss costs
the agent directly. This script re-makes the choice of every (target, seed) of a finished ``purl compare`` folder
with each ``--steps`` value (and, with ``--proxy-seeds N``, the scores averaged over N fine-tune data orders), and
scores each choice by the test accuracy the chosen baseline's own cell reached in that folder (and in every
``--truth`` folder: the same grid at another fine-tuning budget):

* ``best chosen``: seeds on which the chosen candidate had that seed's highest test top-1 among the candidates
  in the grid (ties count);
* ``regret``: the seed's best candidate minus the chosen one, mean over (target, seed) with a 95% Student-t
  interval (0 = always the best);
* the seconds one choice takes (median).

The first row (the config's own ``rerank_steps``, one proxy seed) re-makes the choice the grid's agent cells
made; the script checks it against their ``prior_method``. The test split decides nothing here: it only scores
choices already made on the reward split. Comparing step counts on the same folder the defaults were measured on
is a study, not a tuning: a new default must be confirmed on fresh seeds.

    python benchmarks/bench_prior_choice.py --compare benchmarks/results/finetune_budget/quick-auto-prior/ft24 \\
        --truth benchmarks/results/finetune_budget/quick-auto-prior/ft48 --steps 40 100 200 --proxy-seeds 1 2
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402, F401  (puts the repository on sys.path)

from purl.compare.cells import ResultsTable  # noqa: E402
from purl.compare.report import HEADLINE, saved_config  # noqa: E402
from purl.compare.stats import TIE_TOLERANCE, t_interval  # noqa: E402
from purl.runtime import configure_threads  # noqa: E402

PROXY_SEED_STRIDE = 100_003
"""Proxy seed j of a cell of seed s is ``s + j * PROXY_SEED_STRIDE`` (j = 0: the cell's own choice)."""


def test_scores(folder: Path) -> dict[tuple[float, int], dict[str, float]]:
    """(target, seed) -> {baseline label: test top-1 after FT} of ``folder``'s finished baseline cells."""
    out: dict[tuple[float, int], dict[str, float]] = defaultdict(dict)
    for row in ResultsTable(folder / "results.csv").rows:
        if row.get("status") == "ok" and row.get("method") != "agent" and row.get(HEADLINE) is not None:
            out[(float(row["target_sparsity"]), int(row["seed"]))][row["label"]] = float(row[HEADLINE])
    return out


def recorded_priors(folder: Path) -> dict[tuple[float, int], str]:
    """(target, seed) -> the prior the grid's agent cell recorded (``prior_method``)."""
    return {(float(r["target_sparsity"]), int(r["seed"])): r["prior_method"]
            for r in ResultsTable(folder / "results.csv").rows
            if r.get("status") == "ok" and r.get("method") == "agent" and r.get("prior_method")}


def candidate_scores(task: Any, config: Any, target: float, seed: int, steps: int, proxy_seeds: int
                     ) -> tuple[dict[str, float], float]:
    """Every feasible candidate's proxy score at ``target`` with ``steps`` steps, averaged over ``proxy_seeds``
    data orders, and the seconds it took (what one choice costs)."""
    from purl.agents.run import cell_config
    from purl.config import MethodSpec
    from purl.envs.prior import choose_prior

    spec = next((m for m in config.compare.method_specs() if m.method == "agent"), MethodSpec(label="agent",
                                                                                                method="agent"))
    cfg = cell_config(config, spec, target)
    cfg = cfg.model_copy(update={"agent": cfg.agent.model_copy(update={"rerank_steps": steps})})
    totals: dict[str, list[float]] = defaultdict(list)
    seconds = 0.0
    for j in range(proxy_seeds):
        choice = choose_prior(task, cfg, seed + j * PROXY_SEED_STRIDE)  # memoised: a data order is scored once
        seconds += choice.seconds  # what the choice cost when it was made, also when it came from the memo
        for label, score in choice.scores.items():
            if score is not None:
                totals[label].append(score)
    return {label: statistics.fmean(v) for label, v in totals.items()}, seconds


def score_choice(scores: dict[str, float], truths: dict[str, dict], compare: Path, folders: list[Path],
                 target: float, seed: int) -> dict[str, Any]:
    """The choice ``scores`` make among the candidates with a baseline cell in ``compare`` (the first of equals,
    as :func:`envs.prior.choose_prior`), and its regret in each of ``folders``: the seed's best candidate's test
    top-1 minus the chosen one's (``regret:<folder name>``)."""
    grid = truths[str(compare)].get((target, seed), {})
    present = {k: v for k, v in scores.items() if k in grid}
    chosen = max(present, key=present.get) if present else None
    row: dict[str, Any] = {"target": target, "seed": seed, "chosen": chosen,
                           "all_chosen": max(scores, key=scores.get) if scores else None,
                           "scores": " ".join(f"{k}={v:.3f}" for k, v in scores.items())}
    for folder in folders:
        truth = truths[str(folder)].get((target, seed), {})
        if chosen in truth:
            row[f"regret:{folder.name}"] = max(truth[k] for k in present if k in truth) - truth[chosen]
    return row


def markdown(rows: list[dict[str, Any]], folders: list[Path], steps: list[int], proxy_seeds: list[int],
             compare: Path, command: str) -> str:
    """The table: per proxy (steps x proxy seeds), the cost of a choice and, per folder, best chosen and regret."""
    first = [r for r in rows if r["steps"] == steps[0] and r["proxy_seeds"] == proxy_seeds[0]]
    agree = sum(r["all_chosen"] == r["recorded"] for r in first)
    lines = ["# env.prior: auto, re-made with other proxies", "", f"`{command}`", "",
             f"Folder `{compare}`; {len(first)} (target, seed) choices per proxy. The first proxy re-made the "
             f"agent cells' recorded choice in {agree} of {len(first)}. 'regret': the seed's best candidate minus the "
             "chosen one, test top-1 after FT of their own baseline cells (points), mean and 95% Student-t interval; "
             "'best chosen': choices with zero regret.", "",
             "| steps | proxy seeds | median s per choice | " + " | ".join(
                 f"{f.name}: best chosen | {f.name}: regret [95%]" for f in folders) + " |",
             "|---:|---:|---:|" + "---:|---:|" * len(folders)]
    for k in steps:
        for n in proxy_seeds:
            group = [r for r in rows if r["steps"] == k and r["proxy_seeds"] == n]
            cols = []
            for folder in folders:
                regrets = [r[f"regret:{folder.name}"] for r in group if f"regret:{folder.name}" in r]
                mean, low, high = t_interval(regrets)
                cols.append(f"{sum(x <= TIE_TOLERANCE for x in regrets)} of {len(regrets)} | "
                            f"{mean:.2f} [{low:.2f}, {high:.2f}]")
            lines.append(f"| {k} | {n} | {statistics.median(r['seconds'] for r in group):.1f} | "
                         + " | ".join(cols) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare", type=Path, required=True, help="a finished purl compare folder with agent "
                        "cells (env.prior: auto) and the candidates' baseline cells")
    parser.add_argument("--truth", type=Path, nargs="*", default=[],
                        help="more folders of the same grid (another fine-tuning budget) to score the choices by")
    parser.add_argument("--steps", type=int, nargs="+", default=[40, 100, 200])
    parser.add_argument("--proxy-seeds", type=int, nargs="+", default=[1], help="data orders averaged per choice")
    parser.add_argument("--out", type=Path, default=None, help="default: <compare>/prior_choice.{csv,md}")
    args = parser.parse_args()
    configure_threads(None)
    from purl.runtime import resolve_device
    from purl.task import build_task

    config = saved_config(args.compare)
    if config is None:
        raise SystemExit(f"{args.compare} has no config.yaml: not a purl compare folder")
    folders = [args.compare, *args.truth]
    truths = {str(f): test_scores(f) for f in folders}
    recorded = recorded_priors(args.compare)
    cells = sorted(recorded)
    if not cells:
        raise SystemExit(f"{args.compare}: no finished agent cell recorded a prior (env.prior: auto)")
    rows: list[dict[str, Any]] = []
    for seed in sorted({s for _, s in cells}):
        task = build_task(config.compare.cell_task_config(config, seed), resolve_device("cpu"), progress=False)
        for target in sorted({t for t, s in cells if s == seed}):
            for steps in args.steps:
                for n in args.proxy_seeds:
                    scores, seconds = candidate_scores(task, config, target, seed, steps, n)
                    row = score_choice(scores, truths, args.compare, folders, target, seed)
                    row |= {"steps": steps, "proxy_seeds": n, "recorded": recorded[(target, seed)],
                            "seconds": round(seconds, 2)}
                    rows.append(row)
                    print(f"target {target:g} seed {seed} steps {steps} x{n}: chose {row['chosen']} "
                          f"(recorded {row['recorded']}), {seconds:.1f} s", flush=True)
        del task
    out = args.out or args.compare
    out.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with (out / "prior_choice.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    text = markdown(rows, folders, args.steps, args.proxy_seeds, args.compare,
                    f"python benchmarks/bench_prior_choice.py {' '.join(sys.argv[1:])}")
    (out / "prior_choice.md").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
