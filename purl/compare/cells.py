"""Cells of a comparison grid and the tidy ``results.csv`` they are stored in (one row per cell)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from purl.checkpoint import write_failure
from purl.errors import OutputError, ResultsError
from purl.results import write_text

# Column order of results.csv. JSON-valued columns hold lists/dicts as JSON text.
CSV_COLUMNS: list[str] = [
    "label", "method", "schedule", "min_threshold", "target_sparsity", "seed", "status", "error",
    "achieved_sparsity", "before_test_top1", "before_test_top5", "after_test_top1", "after_test_top5",
    "dense_test_top1", "dense_test_top5", "nonzero_params", "total_params", "dense_flops", "sparse_flops",
    "compression_ratio", "theoretical_speedup", "n_collapsed", "collapsed_layers", "n_near_collapsed",
    "near_collapsed_layers",
    # channel granularity (empty at weight granularity): the budget metric the target removes a fraction of,
    # the kept params / Conv-Linear MACs re-measured from the slimmed model, and (compare.measure_latency)
    # the measured CPU latency ratio slimmed / dense (eager, batch 1, median)
    "granularity", "budget_metric", "params_ratio", "flops_ratio", "latency_ratio",
    "finetune_steps", "wall_time_s", "search_episodes", "search_env_steps", "search_evaluations",
    "search_wall_time_s", "algo", "policy_source",
    # the reported allocation's re-ranking proxy score (agents.selection), empty for baselines
    "policy_proxy",
    # agent.confirm_seeds: the searched winner re-scored beside the prior on fresh seeds, and whether it held
    "policy_confirmation",
    # the agent's prior (env.prior, or what env.prior: auto chose), every candidate's proxy score, and its cost
    "prior_method", "prior_choice_scores", "prior_choice_wall_time_s",
    # the prior's own per-layer allocation, so the agent's deviation from it can be read off the table
    "prior_layer_sparsity",
    # the cell folder whose finished policy the search started from (agent.warm_start), empty when from scratch
    "warm_started_from",
    "attempts", "layer_sparsity", "learning_curve",
]
JSON_COLUMNS = {"collapsed_layers", "near_collapsed_layers", "layer_sparsity", "learning_curve", "prior_choice_scores",
                "policy_confirmation", "prior_layer_sparsity"}
TEXT_COLUMNS = {"label", "method", "schedule", "status", "error", "algo", "policy_source", "granularity",
                "budget_metric", "prior_method", "warm_started_from"}
INT_COLUMNS = {"seed", "n_collapsed", "n_near_collapsed", "nonzero_params", "total_params", "dense_flops",
               "sparse_flops", "finetune_steps", "search_episodes", "search_env_steps", "search_evaluations",
               "attempts"}


@dataclass(frozen=True)
class Cell:
    """One unit of a comparison: a method (by label) at one target sparsity with one seed."""

    label: str
    method: str
    target_sparsity: float
    seed: int

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.label, f"{self.target_sparsity:.6g}", self.seed)

    @property
    def slug(self) -> str:
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in self.label)
        return f"{safe}-s{self.target_sparsity:.6g}-seed{self.seed}"


def _encode(column: str, value: Any) -> str:
    if value is None:
        return ""
    if column in JSON_COLUMNS:
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, float):
        return "inf" if math.isinf(value) else repr(value)
    return str(value)


def _decode(column: str, text: str) -> Any:
    if text == "":
        return None
    if column in JSON_COLUMNS:
        return json.loads(text)
    if column in TEXT_COLUMNS:
        return text
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and column in INT_COLUMNS else number


# Columns a row cannot be used without (a cell's identity and outcome).
KEY_COLUMNS = ("label", "method", "target_sparsity", "seed", "status")
_WARNED: set[tuple[str, int, int]] = set()


@dataclass
class ParsedResults:
    """The readable rows of a results.csv and a short description of every row that was not."""

    rows: list[dict[str, Any]]
    damaged: list[str]


def _decode_row(fields: dict[str, str]) -> dict[str, Any]:
    """Decode one raw row; ValueError naming the column when a value is not what its column holds."""
    row: dict[str, Any] = {}
    for col in CSV_COLUMNS:
        text = fields.get(col, "")
        if "\ufffd" in text:
            raise ValueError(f"column '{col}' holds undecodable bytes")
        try:
            value = _decode(col, text)
        except json.JSONDecodeError:
            raise ValueError(f"column '{col}' is not valid JSON (cut short?)") from None
        if isinstance(value, str) and col not in TEXT_COLUMNS:
            raise ValueError(f"column '{col}' is not a number ({text[:20]!r})")
        row[col] = value
    for col in KEY_COLUMNS:
        if row[col] is None:
            raise ValueError(f"column '{col}' is empty")
    if not isinstance(row["target_sparsity"], float | int) or not isinstance(row["seed"], int):
        raise ValueError("target_sparsity or seed is not a number")
    return row


def parse_results(path: str | Path) -> ParsedResults:
    """Read a results.csv leniently: every complete, well-formed row, plus what was wrong with the others.

    A row cut short (an interrupted copy, a full disk), a JSON column cut inside its quotes or
    undecodable bytes make that row *damaged*; the good rows are kept. A file that is empty or whose
    header is not a PuRL results table raises :class:`~purl.errors.ResultsError`.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise ResultsError(f"cannot read '{path}': {exc.strerror or exc}") from None
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise ResultsError(f"'{path}' is not a PuRL results table (unreadable header: {exc})") from None
    if not header or not any(h.strip() for h in header):
        raise ResultsError(f"'{path}' is empty, not a PuRL results table (expected a header starting "
                           f"'{','.join(CSV_COLUMNS[:4])},...')")
    missing = [col for col in KEY_COLUMNS if col not in header]
    if missing:
        raise ResultsError(f"'{path}' is not a PuRL results table: its header lacks {', '.join(missing)} "
                           f"(expected '{','.join(CSV_COLUMNS[:4])},...')")
    rows: list[dict[str, Any]] = []
    damaged: list[str] = []
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            damaged.append(f"line {reader.line_num} onwards: {exc}")
            break
        if not fields:
            continue  # a blank line
        if len(fields) != len(header):
            damaged.append(f"line {reader.line_num}: {len(fields)} of {len(header)} fields (cut short?)")
            continue
        try:
            rows.append(_decode_row(dict(zip(header, fields, strict=True))))
        except ValueError as exc:
            damaged.append(f"line {reader.line_num}: {exc}")
    return ParsedResults(rows, damaged)


def _summary(damaged: list[str]) -> str:
    more = f"; and {len(damaged) - 1} more" if len(damaged) > 1 else ""
    return f"{len(damaged)} damaged row{'s' if len(damaged) != 1 else ''} ({damaged[0]}{more})"


class ResultsTable:
    """``results.csv`` of one comparison: read, look up finished cells, add rows atomically.

    A damaged file (rows cut short, a broken JSON column, not a results table at all) is loaded with
    its good rows only; :meth:`repair` (and any later write) first keeps the damaged original beside
    it as ``results.csv.damaged-<time>``, so nothing already written is lost.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        self.damaged: list[str] = []  # what could not be read; the original is backed up before a rewrite
        self.backup: Path | None = None
        if self.path.is_file():
            try:
                parsed = parse_results(self.path)
            except ResultsError as exc:
                self.damaged = [str(exc)]
            else:
                self.rows, self.damaged = parsed.rows, parsed.damaged

    @staticmethod
    def read(path: str | Path) -> list[dict[str, Any]]:
        """Rows of a results.csv, values decoded (numbers, JSON columns).

        Damaged rows are skipped with one warning line on stderr (once per file version); a file with
        no readable row at all, or one that is not a results table, raises ResultsError.
        """
        path = Path(path)
        parsed = parse_results(path)
        if parsed.damaged:
            if not parsed.rows:
                raise ResultsError(f"'{path}' has no readable rows: {_summary(parsed.damaged)}; rerun "
                                   "`purl compare` with the same config and output folder to redo them")
            stat = path.stat()
            key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
            if key not in _WARNED:
                _WARNED.add(key)
                print(f"warning: '{path}': skipped {_summary(parsed.damaged)}, using the {len(parsed.rows)} "
                      "good rows; rerun `purl compare` with the same config and output folder to repair it",
                      file=sys.stderr)
        return parsed.rows

    def repair(self) -> str | None:
        """If the file was damaged: back it up, rewrite it with the good rows, and say so (else None)."""
        if not self.damaged:
            return None
        damaged = self.damaged
        self.write()
        what = (f"was not a results table ({damaged[0]}); started an empty table" if not self.rows
                else f"had {_summary(damaged)}; kept the {len(self.rows)} good rows, the damaged cells will re-run")
        return f"repaired '{self.path}': it {what}; the damaged original is kept as '{self.backup}'"

    def finished(self) -> set[tuple[str, str, int]]:
        """Keys of cells that completed successfully (failed cells are retried on a re-run)."""
        return {(r["label"], f"{float(r['target_sparsity']):.6g}", int(r["seed"]))
                for r in self.rows if r.get("status") == "ok"}

    def add(self, row: dict[str, Any]) -> None:
        """Append one row (replacing an earlier failed row of the same cell) and rewrite the file atomically."""
        key = (row["label"], f"{float(row['target_sparsity']):.6g}", int(row["seed"]))
        self.rows = [r for r in self.rows
                     if (r["label"], f"{float(r['target_sparsity']):.6g}", int(r["seed"])) != key]
        self.rows.append({col: row.get(col) for col in CSV_COLUMNS})
        self.write()

    def write(self) -> None:
        """Rewrite the file atomically (a damaged original is first copied aside, never overwritten)."""
        if self.damaged and self.backup is None and self.path.is_file():
            self.backup = _back_up(self.path)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({col: _encode(col, row.get(col)) for col in CSV_COLUMNS})
        write_text(self.path, buffer.getvalue())
        self.damaged = []


def _back_up(path: Path) -> Path:
    """Copy ``path`` to a new ``<name>.damaged-<UTC time>[-N]`` beside it; never overwrites a file."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    data = path.read_bytes()
    for n in range(1000):
        backup = path.with_name(f"{path.name}.damaged-{stamp}" + (f"-{n}" if n else ""))
        try:
            with open(backup, "xb") as handle:  # exclusive: an earlier backup is never replaced
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except FileExistsError:
            continue
        except OSError as exc:
            backup.unlink(missing_ok=True)
            raise write_failure(backup, exc) from exc
        return backup
    raise OutputError(f"cannot back up damaged '{path}': too many backups named '{path.name}.damaged-{stamp}*'")
