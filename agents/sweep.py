"""Sweeps of the agent: a grid of config overrides x seeds, one full agent run per unit, one table.

``purl train --grid env.reward=purl,amc --seeds 0 1`` is a sweep of four *units*
(the cartesian product of every ``--grid`` axis, then the seeds). Each unit is one
complete agent run (:func:`agents.run.search_and_prune`: search, prune, fine-tune,
measure) in its own folder ``<output>/runs/<slug>/`` with ``tb/``, ``checkpoints/``,
``config.yaml``, ``pruned.pt`` and ``results.json``, exactly what ``purl train`` writes
for a single run. After the sweep, ``<output>/sweep.csv`` (one row per unit),
``<output>/sweep.md`` (mean +- std over seeds per grid point) and ``<output>/results.json``
(a summary) are written.

Grid syntax
-----------
``--grid KEY=V1,V2,...`` (repeatable). Every value is YAML-parsed like a positional
``KEY=VALUE`` override. Values are split on commas at the *top level* only: commas
inside ``[...]``, ``{...}``, ``(...)`` or quotes do not split, so
``--grid env.sparsity_grid=[0.5,0.9],[0.2,0.4,0.8]`` has two values and
``--grid "env.reward_kwargs={w_acc: 1, w_sp: 2},{w_acc: 2, w_sp: 1}"`` too; quote a
string that contains a comma (``'a,b'``).

Seeds and the dense model
-------------------------
As in ``purl compare``, a unit's seed seeds the agent, its environments and fine-tuning;
the dense model (data split, pre-training) is the config's ``seed`` and is shared by every
unit. It is built (or loaded from the cache) once by the driver: in-process units share the
very same :class:`~purl.task.Task`; Ray units get its weights through the object store
(:mod:`purl.compare.ray_executor`). Grid keys that change the dense model (``data.*``,
``model.*``, ``pretrain.*``) are allowed: units are grouped by dense model and each group's
model is built once. ``seed`` and ``device`` cannot be grid keys (use ``--seeds`` / ``--device``).

Execution, retries, resume
--------------------------
A unit is a :class:`~purl.compare.runner.CellJob` whose runner is :func:`run_unit`, so the
comparison machinery runs it unchanged: :func:`~purl.compare.runner.execute_cell` in process
(``executor="local"``, the default; Ray is never imported), or
:class:`~purl.compare.ray_executor.RayExecutor` (``executor="ray"``: one Ray task per unit
with ``compare.cpus_per_task`` CPUs and ``compare.gpus_per_task`` GPUs). A failing unit is
retried ``compare.max_retries`` times, then recorded as ``failed`` without stopping the
others. A unit whose ``results.json`` exists is skipped when the sweep is re-run; an
interrupted unit continues from its last checkpoint. Every unit's config is validated
before any work, and so is a finished unit's folder: one that was run with a different
config is an error rather than a silently reused result.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
import json
import math
import re
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from purl.compare.report import mean_std
from purl.config import ExperimentConfig, apply_overrides, config_from_dict, parse_override
from purl.errors import ConfigError

RUNNER = "agents.sweep:run_unit"
UNITS_DIR = "runs"
SWEEP_CSV = "sweep.csv"
SWEEP_MD = "sweep.md"
RESULTS_JSON = "results.json"
UNIT_CONFIG = "config.yaml"
MAX_SLUG = 100

FORBIDDEN_KEYS = {
    "seed": "use --seeds (the config's seed is the dense model's, shared by every unit)",
    "device": "use --device (one device per sweep)",
}
# Keys that do not change a unit's result: a finished unit run with other values is still reused.
IGNORED_KEYS = ("name", "device", "threads", "cache_dir", "compare", "agent.progress_bar", "data.root",
                "data.download", "data.num_workers", "data.eval_batch_size")

# sweep.csv columns after the grid keys.
CSV_COLUMNS = [
    "seed", "unit", "status", "error", "attempts", "after_test_top1", "before_test_top1", "dense_test_top1",
    "achieved_sparsity", "target_sparsity", "best_episode_accuracy", "best_episode_return", "policy_source",
    "search_episodes", "search_env_steps", "search_wall_time_s", "wall_time_s",
]


# ----------------------------------------------------------------------------- the grid


@dataclass(frozen=True)
class GridAxis:
    """One ``--grid KEY=V1,V2,...``: the dotted key, the values as typed and YAML-parsed."""

    key: str
    texts: tuple[str, ...]
    values: tuple[Any, ...]


def split_values(text: str) -> list[str]:
    """Split ``text`` on commas outside brackets, braces, parentheses and quotes (each item stripped)."""
    items, current, depth, quote = [], [], 0, ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            items.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    items.append("".join(current).strip())
    return items


def parse_grid(specs: Sequence[str]) -> list[GridAxis]:
    """``["env.reward=purl,amc", ...]`` -> one :class:`GridAxis` per spec (ConfigError on a malformed one)."""
    axes: list[GridAxis] = []
    for spec in specs:
        key, sep, raw = spec.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise ConfigError(f"--grid '{spec}' is not of the form KEY=V1,V2,...")
        root = key.split(".")[0]
        if root in FORBIDDEN_KEYS:
            raise ConfigError(f"--grid {key}: '{root}' cannot be swept here; {FORBIDDEN_KEYS[root]}")
        if any(axis.key == key for axis in axes):
            raise ConfigError(f"--grid {key}: key given twice; list all its values in one --grid")
        texts = split_values(raw)
        if any(not text for text in texts):
            raise ConfigError(f"--grid {key}: empty value in '{raw}' (values are separated by top-level commas)")
        values = tuple(parse_override(f"{key}={text}")[1] for text in texts)
        canonical = [json.dumps(v, sort_keys=True, default=str) for v in values]
        repeated = sorted({t for t, c in zip(texts, canonical, strict=True) if canonical.count(c) > 1})
        if repeated:
            raise ConfigError(f"--grid {key}: value(s) {', '.join(repeated)} given twice")
        axes.append(GridAxis(key, tuple(texts), values))
    return axes


# ----------------------------------------------------------------------------- units


@dataclass(frozen=True)
class SweepUnit:
    """One agent run of a sweep: a value for every grid key, a seed, a folder name and the validated config."""

    overrides: tuple[tuple[str, str], ...]  # (key, value as typed), in --grid order
    seed: int
    slug: str
    config: ExperimentConfig

    @property
    def override_strings(self) -> list[str]:
        return [f"{key}={text}" for key, text in self.overrides]

    @property
    def point(self) -> tuple[tuple[str, str], ...]:
        """The grid point (the unit without its seed)."""
        return self.overrides

    def describe(self) -> str:
        return " ".join([*self.override_strings, f"seed={self.seed}"])


def unit_config(base: ExperimentConfig, overrides: Sequence[str]) -> ExperimentConfig:
    """``base`` with the ``KEY=VALUE`` overrides applied (the same semantics as positional overrides)."""
    return config_from_dict(apply_overrides(base.to_dict(), list(overrides)))


def _short_keys(keys: Sequence[str]) -> dict[str, str]:
    """Each key's shortest dotted suffix that no other key ends with (``env.reward_kwargs.w_acc`` -> ``w_acc``)."""
    short = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            candidate = ".".join(parts[-n:])
            if not any(other != key and (other == candidate or other.endswith("." + candidate)) for other in keys):
                break
        short[key] = candidate
    return short


def _safe(text: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_.")
    return safe or "empty"


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def unit_slugs(points: Sequence[tuple[tuple[str, str], ...]], seeds: Sequence[int]) -> list[str]:
    """Filesystem-safe, unique folder names, e.g. ``reward-purl__w_acc-2.0__seed0``, in product order.

    A name longer than ``MAX_SLUG`` characters is cut and ends with a hash of the unit; so do
    names that would otherwise collide (values that differ only in unsafe characters).
    """
    keys = [key for key, _ in points[0]] if points else []
    short = _short_keys(keys)
    slugs, full = [], []
    for point, seed in itertools.product(points, seeds):
        full.append(json.dumps([list(point), seed]))
        slug = "__".join([*(f"{_safe(short[k])}-{_safe(t)}" for k, t in point), f"seed{seed}"])
        if len(slug) > MAX_SLUG:
            slug = f"{slug[:MAX_SLUG - 9]}-{_digest(full[-1])}"
        slugs.append(slug)
    for i, slug in enumerate(slugs):
        if slugs.count(slug) > 1 or slug.lower() in [s.lower() for j, s in enumerate(slugs) if j != i]:
            slugs[i] = f"{slug[:MAX_SLUG - 9]}-{_digest(full[i])}"
    return slugs


def plan_units(base: ExperimentConfig, axes: Sequence[GridAxis], seeds: Sequence[int]) -> list[SweepUnit]:
    """Every (grid point, seed), validated: config keys and values, the agent section and the reward.

    Raises one ConfigError naming the grid point at the first invalid unit, before any work.
    """
    seeds = [int(s) for s in seeds]
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ConfigError(f"--seeds: seed(s) {', '.join(map(str, repeated))} given twice")
    if not seeds:
        raise ConfigError("--seeds needs at least one seed")
    points = [tuple(zip([a.key for a in axes], texts, strict=True))
              for texts in itertools.product(*(a.texts for a in axes))]
    slugs = iter(unit_slugs(points, seeds))
    units: list[SweepUnit] = []
    for point in points:
        overrides = [f"{k}={t}" for k, t in point]
        where = f"--grid {' '.join(overrides)}: " if overrides else ""
        try:
            config = unit_config(base, overrides)
            validate_unit_config(config)
        except ConfigError as exc:
            raise ConfigError(f"{where}{exc}") from None
        units.extend(SweepUnit(point, seed, next(slugs), config) for seed in seeds)
    return units


def validate_unit_config(config: ExperimentConfig) -> None:
    """What a unit would otherwise only find out after pre-training: the agent section and the reward."""
    from agents.algorithms import validate_agent_config
    from envs.rewards import make_reward

    validate_agent_config(config)
    make_reward(config.env.reward, config.env.reward_kwargs)


def task_identity(config: ExperimentConfig) -> str:
    """Units with the same identity share one dense model (and one Task)."""
    from purl.task import dense_checkpoint_path

    return f"{dense_checkpoint_path(config)}|{config.data.root}"


def _flatten(raw: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(raw, dict) and raw:
        out: dict[str, Any] = {}
        for key, value in raw.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): raw}


def config_differences(saved: dict[str, Any], config: ExperimentConfig) -> list[str]:
    """Dotted keys whose values differ between a saved config dict and ``config`` (ignoring IGNORED_KEYS)."""
    def relevant(key: str) -> bool:
        return not any(key == k or key.startswith(k + ".") for k in IGNORED_KEYS)

    old, new = _flatten(saved), _flatten(config.to_dict())
    return sorted(k for k in set(old) | set(new) if relevant(k) and old.get(k) != new.get(k))


def unit_dir(output: Path, unit: SweepUnit) -> Path:
    return Path(output) / UNITS_DIR / unit.slug


def check_existing(units: Sequence[SweepUnit], output: Path) -> None:
    """Fail before any work when a unit's folder holds a run made with a different config."""
    for unit in units:
        path = unit_dir(output, unit) / UNIT_CONFIG
        if not path.is_file():
            continue
        try:
            saved = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        diff = config_differences(saved, unit.config)
        if diff:
            shown = ", ".join(f"{k}: {_flatten(saved).get(k)!r} -> {_flatten(unit.config.to_dict()).get(k)!r}"
                              for k in diff[:3]) + (", ..." if len(diff) > 3 else "")
            raise ConfigError(f"unit {unit.slug} in '{path.parent}' was run with a different config ({shown}); "
                              "use another --output or delete that folder")


def finished_row(output: Path, unit: SweepUnit) -> dict[str, Any] | None:
    """The results.json row of a unit that already finished, else None."""
    path = unit_dir(output, unit) / RESULTS_JSON
    if not path.is_file():
        return None
    try:
        row = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return row if isinstance(row, dict) and row.get("after_test_top1") is not None else None


# ----------------------------------------------------------------------------- one unit


def train_and_save(task: Any, config: ExperimentConfig, out: Path, *, seed: int, progress: bool = False,
                   resume: bool = False) -> tuple[dict[str, Any], Any]:
    """One agent run as ``purl train`` makes it: search, prune, fine-tune, ``pruned.pt``; -> (row, outcome).

    ``task.config`` must be ``config`` (fine-tuning and constraints read the task's config).
    The row is ``purl train``'s results.json row (not written here).
    """
    from agents.run import search_and_prune
    from purl.checkpoint import save_checkpoint

    outcome = search_and_prune(task, config, output_dir=out, seed=seed, progress=progress, resume=resume)
    row = {"command": "train", "dataset": config.data.name, "model": config.model.name, "device": str(task.device),
           **outcome.row}
    pruned = save_checkpoint(Path(out) / "pruned.pt", outcome.model, config=config.to_dict(),
                             masks=outcome.masks.state_dict(),
                             meta={k: row[k] for k in ("method", "algo", "target_sparsity", "achieved_sparsity",
                                                      "after_test_top1", "after_test_top5", "policy_source")})
    row["checkpoint"] = str(pruned)
    return row, outcome


def run_unit(task: Any, spec: Any, target_sparsity: float, seed: int, cell_dir: Path,
             progress: bool = False) -> dict[str, Any]:
    """Method runner of one sweep unit (a :mod:`purl.compare.runner` runner; in process or in a Ray task).

    ``spec.kwargs`` holds the unit's ``overrides`` (``KEY=VALUE`` strings) and ``unit`` (its slug);
    the unit's config is ``task.config`` with them applied. Writes ``config.yaml`` first, then trains
    with ``resume=True`` (an interrupted unit continues from its checkpoint) and writes ``pruned.pt``
    and ``results.json`` (``purl train``'s row plus ``unit`` and ``overrides``).
    """
    from purl.config import save_config
    from purl.results import write_json

    overrides = list(spec.kwargs.get("overrides", []))
    config = unit_config(task.config, overrides)
    if abs(config.env.target_sparsity - target_sparsity) > 1e-12:
        config = unit_config(config, [f"env.target_sparsity={target_sparsity!r}"])
    out = Path(cell_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / UNIT_CONFIG)
    unit_task = dataclasses.replace(task, config=config)  # shares the dense model, data and caches
    row, _ = train_and_save(unit_task, config, out, seed=seed, progress=progress, resume=True)
    row.update({"unit": spec.kwargs.get("unit", out.name), "overrides": dict(o.split("=", 1) for o in overrides)})
    write_json(out / RESULTS_JSON, row)
    return row


# ----------------------------------------------------------------------------- the sweep


@dataclass
class SweepResult:
    """Rows of ``sweep.csv`` (plan order) and what happened: ``ran``, ``skipped`` (finished before), ``failed``."""

    rows: list[dict[str, Any]]
    keys: list[str]
    ran: int = 0
    skipped: int = 0
    failed: int = 0
    wall_time_s: float = 0.0
    files: dict[str, Path] = field(default_factory=dict)


def _job(unit: SweepUnit, task_config: ExperimentConfig, output: Path, device: str) -> Any:
    from purl.compare.cells import Cell
    from purl.compare.runner import CellJob
    from purl.config import MethodSpec

    cell = Cell(unit.slug, "agent", float(unit.config.env.target_sparsity), unit.seed)
    spec = MethodSpec(label=unit.slug, method="agent", kwargs={"overrides": unit.override_strings,
                                                               "unit": unit.slug})
    return CellJob(task_config, cell, spec, unit_dir(output, unit).resolve(), RUNNER, device, progress=False,
                   max_retries=unit.config.compare.max_retries)


def sweep_row(unit: SweepUnit, row: dict[str, Any]) -> dict[str, Any]:
    """A unit's sweep.csv row from its results/outcome row."""
    out: dict[str, Any] = {key: text for key, text in unit.overrides}
    out.update({"seed": unit.seed, "unit": unit.slug})
    for column in CSV_COLUMNS[2:]:
        out[column] = row.get(column)
    out["status"] = row.get("status") or "ok"
    return out


def run_sweep(
    base: ExperimentConfig,
    units: Sequence[SweepUnit],
    output: Path,
    *,
    device: Any,
    executor: Any = None,
    progress: bool = True,
    report: Callable[[SweepUnit, dict[str, Any], str, int, int], None] | None = None,
) -> SweepResult:
    """Run every unfinished unit, then write sweep.csv, sweep.md and results.json in ``output``.

    ``executor`` None runs the units one after another in this process (no Ray import); else an
    object with ``run(jobs)`` yielding :class:`~purl.compare.runner.CellOutcome`\\ s (a
    :class:`~purl.compare.ray_executor.RayExecutor`, closed at the end if it has ``close()``).
    ``report(unit, row, kind, done, total)`` is called per unit, ``kind`` in ok/failed/skipped.
    """
    from purl.task import build_task

    start = time.perf_counter()
    output = Path(output)
    keys = list(dict.fromkeys(k for unit in units for k, _ in unit.overrides))
    check_existing(units, output)
    rows: dict[str, dict[str, Any]] = {}
    result = SweepResult(rows=[], keys=keys)
    total = len(units)

    def record(unit: SweepUnit, row: dict[str, Any], kind: str) -> None:
        rows[unit.slug] = sweep_row(unit, row)
        result.rows = [rows[u.slug] for u in units if u.slug in rows]
        write_sweep_csv(output / SWEEP_CSV, result.rows, keys)  # partial table survives an interruption
        if report is not None:
            report(unit, row, kind, len(rows), total)

    for unit in units:
        done = finished_row(output, unit)
        if done is not None:
            result.skipped += 1
            record(unit, done, "skipped")
    pending = [u for u in units if u.slug not in rows]

    groups: dict[str, list[SweepUnit]] = {}
    for unit in pending:
        groups.setdefault(task_identity(unit.config), []).append(unit)
    try:
        tasks = {}
        for identity, members in groups.items():  # the dense model(s): built or loaded once, by the driver
            first = members[0].config
            task_config = base if task_identity(base) == identity else first
            tasks[identity] = build_task(task_config, device, progress=progress)
        by_slug = {u.slug: u for u in pending}
        jobs = [(_job(u, tasks[task_identity(u.config)].config, output, str(device)), u) for u in pending]
        if executor is None:
            from purl.compare.runner import execute_cell

            outcomes: Iterable[Any] = (execute_cell(job, tasks[task_identity(u.config)]) for job, u in jobs)
        else:
            outcomes = executor.run([(job, None) for job, _ in jobs])
        for outcome in outcomes:
            unit = by_slug[outcome.cell.label]
            result.ran += 1
            result.failed += int(outcome.failed)
            record(unit, outcome.row, "failed" if outcome.failed else "ok")
    finally:
        close = getattr(executor, "close", None)
        if callable(close):
            close()
    result.wall_time_s = time.perf_counter() - start
    result.files = write_outputs(base, units, output, result)
    return result


# ----------------------------------------------------------------------------- tables


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "inf" if math.isinf(value) else repr(value)
    return str(value)


def write_sweep_csv(path: Path, rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> Path:
    from purl.results import write_text

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = [*keys, *CSV_COLUMNS]
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return write_text(path, buffer.getvalue())


def _stats(values: Sequence[float], digits: int) -> str:
    if not values:
        return "–"
    mean, std = mean_std(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def summary_markdown(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> str:
    """Mean ± sample std over seeds per grid point; the best mean after-fine-tuning top-1 in bold."""
    points: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        points.setdefault(tuple(str(row.get(k, "")) for k in keys), []).append(row)
    metrics = [("after_test_top1", "top-1 after FT (%)", 2), ("before_test_top1", "top-1 before FT (%)", 2),
               ("achieved_sparsity", "sparsity", 4), ("best_episode_accuracy", "best-episode reward acc.", 4),
               ("search_wall_time_s", "search (s)", 1), ("wall_time_s", "wall (s)", 1)]
    ok_values = {p: {m: [float(r[m]) for r in rs if r.get("status") == "ok" and r.get(m) is not None]
                     for m, _, _ in metrics} for p, rs in points.items()}
    means = {p: statistics.fmean(v["after_test_top1"]) for p, v in ok_values.items() if v["after_test_top1"]}
    best = max(means.values()) if len(means) > 1 and len(set(means.values())) > 1 else None
    header = [*(keys or ["run"]), "seeds ok", *(title for _, title, _ in metrics)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for point, members in points.items():
        cells = [f"`{v}`" for v in point] if keys else ["agent"]
        cells.append(f"{sum(r.get('status') == 'ok' for r in members)}/{len(members)}")
        for metric, _, digits in metrics:
            text = _stats(ok_values[point][metric], digits)
            if metric == "after_test_top1" and best is not None and means.get(point) == best:
                text = f"**{text}**"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    n_ok = sum(r.get("status") == "ok" for r in rows)
    intro = (f"Sweep: {len(points)} grid point(s) x seeds = {len(rows)} unit(s), {n_ok} ok, "
             f"{len(rows) - n_ok} failed. Mean ± std over seeds (ok units only).")
    return "\n".join([intro, "", *lines, ""])


def write_outputs(base: ExperimentConfig, units: Sequence[SweepUnit], output: Path,
                  result: SweepResult) -> dict[str, Path]:
    """sweep.csv, sweep.md, results.json (summary) and config.yaml (the base config) in ``output``."""
    from purl.config import save_config
    from purl.results import write_json, write_text

    csv_path = write_sweep_csv(output / SWEEP_CSV, result.rows, result.keys)
    md_path = write_text(output / SWEEP_MD, summary_markdown(result.rows, result.keys))
    save_config(base, output / UNIT_CONFIG)
    ok = [r for r in result.rows if r.get("status") == "ok" and r.get("after_test_top1") is not None]
    best = max(ok, key=lambda r: float(r["after_test_top1"])) if ok else None
    grid: dict[str, list[str]] = {}
    for unit in units:
        for key, text in unit.overrides:
            grid.setdefault(key, [])
            if text not in grid[key]:
                grid[key].append(text)
    summary = {
        "command": "train", "sweep": True, "name": base.name, "dataset": base.data.name, "model": base.model.name,
        "grid": grid, "seeds": list(dict.fromkeys(u.seed for u in units)), "units": len(units),
        "ok": len(ok), "failed": sum(r.get("status") != "ok" for r in result.rows), "ran": result.ran,
        "skipped": result.skipped, "wall_time_s": result.wall_time_s,
        "best_unit": None if best is None else {"unit": best["unit"], "seed": best["seed"],
                                                "after_test_top1": best["after_test_top1"],
                                                "overrides": {k: best.get(k) for k in result.keys}},
        "files": {"sweep_csv": str(csv_path), "sweep_md": str(md_path), "runs": str(output / UNITS_DIR)},
    }
    json_path = write_json(output / RESULTS_JSON, summary)
    return {"sweep_csv": csv_path, "sweep_md": md_path, "results": json_path}
