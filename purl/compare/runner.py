"""Run a comparison grid cell by cell, saving each finished cell at once and skipping finished ones.

Every cell runs through a :class:`purl.methods.Method` found by name in :data:`purl.methods.METHODS`
(``agent``, or ``baseline`` for any allocator name), so this core module never imports ``baselines``
or ``agents`` at import time, and a remote worker (see :mod:`purl.compare.ray_executor`) resolves the
same method from the job's picklable ``method`` name. The method merges the cell's config
(:func:`purl.config.merge_config`) and returns the measured row (see
:func:`purl.pipeline.finetune_and_measure`).
"""

from __future__ import annotations

import errno
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from purl.compare.cells import Cell, ResultsTable
from purl.compare.identity import check_same_grid
from purl.config import ExperimentConfig, MethodSpec
from purl.errors import PurlError
from purl.methods import MethodCell, Pruned, get_method, method_name
from purl.progress import progress_bar
from purl.task import Task

AGENT = "agent"


@dataclass(frozen=True)
class CellJob:
    """Everything needed to run one cell anywhere: picklable, no live objects."""

    config: ExperimentConfig
    cell: Cell
    spec: MethodSpec
    cell_dir: Path
    method: str  # a name in purl.methods.METHODS (picklable: a Ray worker resolves it the same way)
    device: str
    progress: bool = False
    max_retries: int = 0
    previous_dir: Path | None = None  # the same label and seed's cell folder at the previous target (MethodCell)


@dataclass
class CellOutcome:
    """A finished cell: its results row, and (from a remote worker) the files it wrote, for the driver to write."""

    cell: Cell
    row: dict[str, Any]
    failed: bool = False
    messages: list[str] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)  # path relative to the cell folder -> content


def plan_cells(config: ExperimentConfig) -> list[Cell]:
    """Every (method label, target sparsity, seed) of the grid; agent cells first within each seed."""
    specs = config.compare.method_specs()
    ordered = [s for s in specs if s.method == AGENT] + [s for s in specs if s.method != AGENT]
    return [Cell(spec.label, spec.method, float(sparsity), int(seed))
            for seed in config.compare.seeds for sparsity in config.compare.sparsities for spec in ordered]


def previous_cell(config: ExperimentConfig, cell: Cell) -> Cell | None:
    """The same label and seed's cell at the target listed before ``cell``'s in ``compare.sparsities`` (None for
    the first): :func:`plan_cells` runs it earlier, so a method can start from what it left in its folder."""
    targets = [float(s) for s in config.compare.sparsities]
    index = next(i for i, t in enumerate(targets) if abs(t - cell.target_sparsity) < 1e-12)
    if index == 0:
        return None
    return Cell(cell.label, cell.method, targets[index - 1], cell.seed)


def cell_identity(spec: MethodSpec, target: float | None, seed: int) -> dict[str, Any]:
    """The fields that name a cell in its results row (a compare cell's and a one-cell run's alike)."""
    return {"label": spec.label, "method": spec.method, "schedule": spec.schedule,
            "min_threshold": spec.min_threshold, "target_sparsity": target, "seed": seed}


def _base_row(job: CellJob) -> dict[str, Any]:
    return cell_identity(job.spec, job.cell.target_sparsity, job.cell.seed)


def finished_row(base: dict[str, Any], measured: dict[str, Any], *, attempts: int, seconds: float) -> dict[str, Any]:
    """A finished cell's results row: its identity, what the method measured, status ``ok``, the attempts and
    the wall time (a resumed agent search adds its earlier sessions')."""
    earlier = float(measured.get("earlier_sessions_wall_time_s") or 0.0)
    return base | measured | {"status": "ok", "error": None, "attempts": attempts, "wall_time_s": earlier + seconds}


def run_one_cell(task: Task, config: ExperimentConfig, spec: MethodSpec, target: float | None, seed: int,
                 folder: Path, *, progress: bool = True, resume: bool = True) -> tuple[dict[str, Any], Pruned]:
    """``purl prune`` and single-run ``purl train``: a one-cell grid, in process -> (its row, the pruned model).

    The cell runs as :func:`execute_cell` runs a compare cell (``seed_everything(seed)``, then the built-in
    method's template: ``prune``, then the shared ``finish``), so the same config and seed give the same row as
    that compare cell (tests/test_one_cell.py). ``finish`` leaves the export to the caller
    (:func:`purl.methods.save_pruned`: checkpoint first, then ``.pt2``/``.onnx``), so a model that cannot be
    exported never loses the finished run; the caller records the row last (:func:`record_cell`), so a run that
    fails to save leaves no row behind.
    """
    from purl.methods import PruningMethod
    from purl.runtime import seed_everything

    method = get_method(spec.method)
    if not isinstance(method, PruningMethod):
        raise PurlError(f"method '{spec.label}' is not a built-in method; run it with purl compare")
    cell = MethodCell(task, config, spec, target, seed, folder, progress, resume)
    start = time.perf_counter()
    seed_everything(seed)
    pruned = method.prune(cell)
    measured = method.finish(cell, pruned, export=False)
    return finished_row(cell_identity(spec, target, seed), measured, attempts=1,
                        seconds=time.perf_counter() - start), pruned


def record_cell(folder: Path, row: dict[str, Any]) -> Path:
    """Append a one-cell run's row to ``folder/results.csv`` in the grid's schema (``purl report folder`` reads
    it; a rerun replaces the row of the same cell) -> the file."""
    table = ResultsTable(folder / "results.csv")
    table.add(row)
    return table.path


def is_deterministic(exc: BaseException) -> bool:
    """Whether ``exc`` fails the same way on every try: a user error (:class:`~purl.errors.PurlError`: a bad
    config, an impossible target, ...) or a full disk (an ``OSError`` with errno ENOSPC, also as a cause)."""
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, PurlError) or (isinstance(error, OSError) and error.errno == errno.ENOSPC):
            return True
        error = error.__cause__ or error.__context__
    return False


def execute_cell(job: CellJob, task: Task | None = None, effective_sparsity: float | None = None) -> CellOutcome:
    """Run one cell with retries; never raises for a method failure (it is recorded as status=failed).

    A deterministic failure (:func:`is_deterministic`: a PurlError or a full disk) is recorded at once
    (attempts = 1): a retry would fail the same way. Any other exception is retried ``job.max_retries`` times.

    ``task`` is the shared in-process task; a remote worker passes None and builds it from the
    cached dense checkpoint. ``effective_sparsity`` overrides the target (baselines matching an
    agent that was not held to the budget).
    """
    from purl.runtime import resolve_device, seed_everything
    from purl.task import build_task

    method = get_method(job.method)
    target = job.cell.target_sparsity if effective_sparsity is None else effective_sparsity
    messages: list[str] = []
    attempts = 0
    while True:
        attempts += 1
        start = time.perf_counter()
        try:
            if task is None:
                task = build_task(job.config, resolve_device(job.device), progress=False)
            config = method.cell_config(task.config, job.spec, target)
            seed_everything(job.cell.seed)
            job.cell_dir.mkdir(parents=True, exist_ok=True)
            measured = method.run(MethodCell(task, config, job.spec, target, job.cell.seed, job.cell_dir,
                                             job.progress, previous=job.previous_dir))
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - a failed cell must not stop the grid
            detail = f"{type(exc).__name__}: {exc}" if isinstance(exc, PurlError) else \
                traceback.format_exc(limit=3).strip().splitlines()[-1]
            deterministic = is_deterministic(exc)
            if deterministic and attempts <= job.max_retries:
                detail += " (not retried: it would fail the same way)"
            messages.append(f"attempt {attempts}: {detail}")
            if attempts <= job.max_retries and not deterministic:
                continue
            row = _base_row(job) | {"status": "failed", "error": " | ".join(messages), "attempts": attempts}
            return CellOutcome(job.cell, row, failed=True, messages=messages)
        row = finished_row(_base_row(job), measured, attempts=attempts, seconds=time.perf_counter() - start)
        return CellOutcome(job.cell, row, messages=messages)


class LocalExecutor:
    """In-process, sequential execution (the default; needs nothing beyond PuRL).

    Cells share one task: the one given for the whole grid, or under ``compare.seed_scope: task`` one per
    seed, built (dense model from the cache, or pre-trained once) when the first cell of that seed runs. Only
    the latest task is kept: the grid runs seed by seed.
    """

    def __init__(self, task: Task | None = None) -> None:
        self.task = task

    def _task_for(self, job: CellJob) -> Task:
        from purl.runtime import resolve_device
        from purl.task import build_task

        per_seed = job.config.compare.seed_scope == "task"
        if self.task is None or (per_seed and self.task.config.seed != job.config.seed):
            self.task = None  # free the previous seed's task first
            self.task = build_task(job.config, resolve_device(job.device), progress=False)
        return self.task

    def run(self, jobs: list[tuple[CellJob, float | None]]) -> Iterable[CellOutcome]:
        for job, effective in jobs:
            yield execute_cell(job, self._task_for(job), effective)


def run_comparison(
    config: ExperimentConfig,
    output: Path,
    *,
    executor: Any,
    device: str,
    progress: bool = True,
    report: Callable[[CellOutcome, int, int], None] | None = None,
) -> ResultsTable:
    """Run every unfinished cell of ``config.compare``; append each to ``output/results.csv`` as it finishes.

    Each cell runs the :class:`~purl.methods.Method` its method name resolves to. When the
    environment's budget mode is off, baselines run at the agent's achieved sparsity of the same
    (target, seed), so agent cells run first as their own phase. An executor with a ``close()``
    method is closed at the end (also on error or interruption).
    """
    check_same_grid(output, config)  # the fairness guard: never mix rows of another grid config
    table = _open_results(output)
    done = table.finished()
    specs = {s.label: s for s in config.compare.method_specs()}
    planned = plan_cells(config)
    pending = [c for c in planned if c.key not in done]
    total = len(planned)
    if len(pending) < total:
        print(f"resuming: {total - len(pending)} of {total} cells already finished in {table.path}, "
              f"running {len(pending)}", flush=True)
    planned_keys = {c.key for c in planned}
    # on a terminal a bar; elsewhere nothing (the report's [k/N] lines say how far the grid is)
    bar = progress_bar(total, initial=total - len(pending), desc="compare", unit="cell", enabled=progress,
                       leave=True, plain=False)

    methods = {label: method_name(spec.method) for label, spec in specs.items()}

    def job_for(cell: Cell) -> CellJob:
        previous = previous_cell(config, cell)
        return CellJob(config.compare.cell_task_config(config, cell.seed), cell, specs[cell.label],
                       output / "cells" / cell.slug, methods[cell.label], device, progress=False,
                       max_retries=config.compare.max_retries,
                       previous_dir=None if previous is None else output / "cells" / previous.slug)

    match_agent = not config.env.budget and any(s.method == AGENT for s in specs.values())
    phases = _phases(pending, agent_first=match_agent)
    try:
        for phase in phases:
            jobs = [(job_for(cell), _agent_sparsity(table, cell) if match_agent else None) for cell in phase]
            for outcome in executor.run(jobs):
                table.add(outcome.row)
                bar.update(1)
                if report is not None:
                    report(outcome, _finished_count(table, planned_keys), total)
    finally:
        bar.close()
        close = getattr(executor, "close", None)  # e.g. RayExecutor: shut down the Ray it started
        if callable(close):
            close()
    return table


def _open_results(output: Path) -> ResultsTable:
    """``output/results.csv``; a damaged one keeps its good rows (the original backed up, the rest re-run)."""
    table = ResultsTable(output / "results.csv")
    repaired = table.repair()
    if repaired:
        print(f"warning: {repaired}", file=sys.stderr, flush=True)
    return table


def _finished_count(table: ResultsTable, planned_keys: set[tuple[str, str, int]]) -> int:
    """Cells of this grid with a row (rows of other grids in the same file are not counted)."""
    return sum((r["label"], f"{float(r['target_sparsity']):.6g}", int(r["seed"])) in planned_keys
               for r in table.rows)


def _phases(pending: list[Cell], *, agent_first: bool) -> list[list[Cell]]:
    """The cells in the order they must run: agent cells as their own first phase when baselines match the
    agent's achieved sparsity (``env.budget`` off), else one phase."""
    if not agent_first:
        return [pending]
    return [[c for c in pending if c.method == AGENT], [c for c in pending if c.method != AGENT]]


def _agent_sparsity(table: ResultsTable, cell: Cell) -> float | None:
    """The achieved sparsity of the agent at the same target and seed, if that cell finished."""
    if cell.method == AGENT:
        return None
    for row in table.rows:
        if (row["method"] == AGENT and row["status"] == "ok" and int(row["seed"]) == cell.seed
                and abs(float(row["target_sparsity"]) - cell.target_sparsity) < 1e-9):
            return float(row["achieved_sparsity"])
    return None
