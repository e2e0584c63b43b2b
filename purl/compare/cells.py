"""Cells of a comparison grid and the tidy ``results.csv`` they are stored in (one row per cell)."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from purl.results import write_text

# Column order of results.csv. JSON-valued columns hold lists/dicts as JSON text.
CSV_COLUMNS: list[str] = [
    "label", "method", "schedule", "min_threshold", "target_sparsity", "seed", "status", "error",
    "achieved_sparsity", "before_test_top1", "before_test_top5", "after_test_top1", "after_test_top5",
    "dense_test_top1", "dense_test_top5", "nonzero_params", "total_params", "dense_flops", "sparse_flops",
    "compression_ratio", "theoretical_speedup", "n_collapsed", "collapsed_layers", "n_near_collapsed",
    "near_collapsed_layers",
    "finetune_steps", "wall_time_s", "search_episodes", "search_env_steps", "search_evaluations",
    "search_wall_time_s", "policy_source", "attempts", "layer_sparsity", "learning_curve",
]
JSON_COLUMNS = {"collapsed_layers", "near_collapsed_layers", "layer_sparsity", "learning_curve"}
TEXT_COLUMNS = {"label", "method", "schedule", "status", "error", "policy_source"}
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


class ResultsTable:
    """``results.csv`` of one comparison: read, look up finished cells, add rows atomically."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = self.read(self.path) if self.path.is_file() else []

    @staticmethod
    def read(path: str | Path) -> list[dict[str, Any]]:
        """Rows of a results.csv, values decoded (numbers, JSON columns)."""
        with open(path, newline="") as handle:
            return [{col: _decode(col, row.get(col, "")) for col in CSV_COLUMNS} for row in csv.DictReader(handle)]

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
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({col: _encode(col, row.get(col)) for col in CSV_COLUMNS})
        write_text(self.path, buffer.getvalue())
