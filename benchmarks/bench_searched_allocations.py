"""Did the search find anything better than what the agent reported? Fine-tune its candidates and see.

For every finished weight-granularity agent cell of a ``purl compare`` folder, takes the allocations its search
kept (``checkpoints/last.json``): the most accurate at the target by one-shot reward-split accuracy
(``most-accurate``; with ``env.terminal_proxy_steps`` the episodes' accuracy is the terminal proxy's) and the
highest-return one (``best-return``, what the reward itself prefers), plus the cell's ``prior`` (rebuilt as its env
built it), so "never below its own prior" is measured even where the agent reported a searched allocation. Each is
pruned and fine-tuned exactly as the cell fine-tuned the allocation it reported (the same seed's task, the
grid's fine-tuning budget and seed: :func:`purl.agents.apply_policy` then
:func:`purl.pipeline.finetune_and_measure`), and its test top-1 is compared with the reported one, paired by
seed (95% Student-t interval, W/T/L). A candidate equal to the reported allocation is not fine-tuned again.

This is a diagnostic of the result selection (``agent.beat_prior_z``, the re-ranking proxy): when the agent
reports its prior, were the rejected search results better, worse or the same after real fine-tuning? The test
split decides nothing here and is never fed back into a method.

    python benchmarks/bench_searched_allocations.py benchmarks/results/evidence/lenet5-reward

Writes ``<folder>/searched_allocations.csv`` (one row per cell and candidate; finished rows are kept and
skipped on a re-run) and ``<folder>/searched_allocations.md``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402, F401  (puts the repository on sys.path)

from purl.compare.cells import Cell, ResultsTable  # noqa: E402
from purl.compare.report import method_names, saved_config  # noqa: E402
from purl.compare.stats import paired_difference  # noqa: E402
from purl.runtime import configure_threads  # noqa: E402

CANDIDATES = {"most-accurate": "best_accuracy", "best-return": "best_return"}
#: plus ``prior``: the cell's prior allocation (``env.prior`` or what ``env.prior: auto`` chose), rebuilt exactly
FIELDS = ["label", "target_sparsity", "seed", "candidate", "reported_source", "reported_top1", "candidate_top1",
          "same_as_reported", "candidate_oneshot_accuracy", "layer_sparsity"]


def candidates(cell_dir: Path) -> dict[str, dict[str, Any]]:
    """candidate name -> episode record (with ``layer_sparsities``) from the cell's checkpoint state."""
    state = json.loads((cell_dir / "checkpoints" / "last.json").read_text())
    return {name: state[key] for name, key in CANDIDATES.items() if state.get(key)}


def prior_allocation(config: Any, row: dict[str, Any], task: Any) -> dict[str, float] | None:
    """The cell's prior allocation exactly as its env built it (the zero action at every step), from the prior the
    cell recorded (``prior_method``, a label of ``env.prior_candidates`` under ``env.prior: auto``, or the named
    prior); None when the cell had no prior (an action mode other than ``prior-relative``)."""
    from purl.agents.run import cell_config, prior_episode
    from purl.config import MethodSpec
    from purl.envs import PruningEnv
    from purl.envs.prior import with_prior

    label = row.get("prior_method")
    if not label:
        return None
    spec = next((m for m in config.compare.method_specs() if m.label == row["label"]),
                MethodSpec(label=row["label"], method="agent"))
    cfg = cell_config(config, spec, float(row["target_sparsity"]))
    chosen = next((p for p in cfg.env.prior_specs() if p.label == label), None)
    if chosen is not None:  # env.prior auto: the candidate it chose, written in as resolve_prior writes it
        cfg = with_prior(cfg, chosen)
    env = PruningEnv(cfg, task=task)
    try:
        episode = prior_episode(env, int(row["seed"]))
    finally:
        env.close()
    return None if episode is None else {k: float(v) for k, v in episode["layer_sparsities"].items()}


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    return set(a) == set(b) and all(abs(float(a[k]) - float(b[k])) < 1e-9 for k in a)


def seed_task(config: Any, seed: int, tasks: dict[int, Any]) -> Any:
    """Seed ``seed``'s task (its split and dense model), one at a time in ``tasks``."""
    from purl.runtime import resolve_device
    from purl.task import build_task

    if seed not in tasks:
        tasks.clear()
        tasks[seed] = build_task(config.compare.cell_task_config(config, seed), resolve_device("cpu"),
                                 progress=False)
    return tasks[seed]


def finetune(config: Any, seed: int, sparsities: dict[str, float], tasks: dict[int, Any]) -> float:
    """Test top-1 after the grid's fine-tuning of ``sparsities`` on seed ``seed``'s task (as the agent cell)."""
    from purl.agents import apply_policy
    from purl.agents.policy import default_constraints
    from purl.pipeline import finetune_and_measure
    from purl.runtime import seed_everything

    task = seed_task(config, seed, tasks)
    seed_everything(seed)
    model, masks = apply_policy(task, sparsities, default_constraints(task))
    return float(finetune_and_measure(task, model, masks, seed=seed, progress=False)["after_test_top1"])


def _done(path: Path) -> dict[tuple, dict[str, Any]]:
    if not path.is_file():
        return {}
    with path.open(newline="") as handle:
        return {(r["label"], float(r["target_sparsity"]), int(r["seed"]), r["candidate"]): r
                for r in csv.DictReader(handle)}


def measure(folder: Path, out_csv: Path) -> list[dict[str, Any]]:
    """Every (agent cell, candidate) row, fine-tuning those not in ``out_csv`` yet (appended as they finish)."""
    config = saved_config(folder)
    if config is None:
        raise SystemExit(f"'{folder}' has no config.yaml (not a purl compare folder)")
    configure_threads(config.threads)  # the grid's thread count: another one changes the fine-tune's numerics
    done, tasks = _done(out_csv), {}
    rows = [r for r in ResultsTable.read(folder / "results.csv")
            if r["status"] == "ok" and r["method"] == "agent" and not r.get("flops_ratio")]
    for row in sorted(rows, key=lambda r: (r["seed"], r["label"], r["target_sparsity"])):
        cell = Cell(row["label"], "agent", float(row["target_sparsity"]), int(row["seed"]))
        found = candidates(folder / "cells" / cell.slug)
        if (cell.label, cell.target_sparsity, cell.seed, "prior") not in done:
            prior = prior_allocation(config, row, seed_task(config, cell.seed, tasks))
            if prior is not None:
                found["prior"] = {"layer_sparsities": prior, "accuracy": float("nan")}
        for name, episode in found.items():
            key = (cell.label, cell.target_sparsity, cell.seed, name)
            if key in done:
                continue
            same = _same(episode["layer_sparsities"], row["layer_sparsity"])
            top1 = float(row["after_test_top1"]) if same else finetune(config, cell.seed,
                                                                        episode["layer_sparsities"], tasks)
            done[key] = {"label": cell.label, "target_sparsity": cell.target_sparsity, "seed": cell.seed,
                         "candidate": name, "reported_source": row["policy_source"],
                         "reported_top1": float(row["after_test_top1"]), "candidate_top1": top1,
                         "same_as_reported": same, "candidate_oneshot_accuracy": 100 * float(episode["accuracy"]),
                         "layer_sparsity": json.dumps(episode["layer_sparsities"])}
            print(f"{cell.slug} {name}: {top1:.2f} (reported {float(row['after_test_top1']):.2f}"
                  f"{', the same allocation' if same else ''})", flush=True)
            _write(out_csv, list(done.values()))
    return list(done.values())


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    """The table so far, written atomically (:func:`purl.results.write_text`): an interrupt never leaves half."""
    from purl.results import write_text

    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, text.getvalue())


def markdown(rows: list[dict[str, Any]], names: dict[str, str], command: str) -> str:
    lines = ["# The search's candidates, fine-tuned like the reported allocation", "", f"`{command}`", "",
             "Test top-1 (%) after the grid's fine-tuning; candidate minus reported, paired by seed (95% Student-t "
             "interval, W/T/L); 'same' = seeds where the candidate is the reported allocation.", "",
             "| agent | target | candidate | reported | candidate | candidate - reported | same |",
             "|---|---:|---|---:|---:|---:|---:|"]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["label"], float(r["target_sparsity"]), r["candidate"]), []).append(r)
    for (label, target, name), group in sorted(groups.items()):
        cand = {int(r["seed"]): float(r["candidate_top1"]) for r in group}
        rep = {int(r["seed"]): float(r["reported_top1"]) for r in group}
        diff = paired_difference(cand, rep)
        same = sum(str(r["same_as_reported"]) in ("True", "true", "1") for r in group)
        interval = "n/a" if diff.n < 2 else f"[{diff.low:+.2f}, {diff.high:+.2f}]"
        lines.append(f"| {names.get(label, label)} | {target:g} | {name} | {statistics.fmean(rep.values()):.2f} | "
                     f"{statistics.fmean(cand.values()):.2f} | {diff.mean:+.2f} {interval} {diff.wtl} | "
                     f"{same} of {len(group)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a purl compare output folder with agent cells")
    args = parser.parse_args()
    out_csv = args.folder / "searched_allocations.csv"
    rows = measure(args.folder, out_csv)
    names = method_names(ResultsTable.read(args.folder / "results.csv"))
    text = markdown(rows, names, "python benchmarks/bench_searched_allocations.py " + " ".join(sys.argv[1:]))
    (args.folder / "searched_allocations.md").write_text(text)
    print(text)
    print(f"wrote {out_csv}, {args.folder / 'searched_allocations.md'}")


if __name__ == "__main__":
    main()
