"""Shared helpers of the PuRL benchmark scripts (configs, tasks, tables, CSV, timing).

Every script of ``benchmarks/`` loads the shipped mnist5k configs through :func:`task_config`,
so all of them share the same pre-training settings and therefore the same cached dense
model (``cache_dir``, default ``~/.cache/purl``): ResNet-20 is pre-trained once, on first use.
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"

#: short model name -> shipped config (its pretrain section is never overridden here: shared cache)
MODELS: dict[str, Path] = {
    "lenet5": ROOT / "configs" / "mnist5k-lenet5.yaml",
    "resnet20": ROOT / "configs" / "mnist5k-resnet20.yaml",
}


def config_path(model: str) -> Path:
    """A key of :data:`MODELS`, or a path to any experiment YAML (e.g. ``configs/cifar10-resnet56.yaml``)."""
    if model in MODELS:
        return MODELS[model]
    path = Path(model)
    if not path.is_file() and (ROOT / path).is_file():
        path = ROOT / path
    if not path.is_file():
        raise SystemExit(f"unknown model '{model}': use one of {', '.join(MODELS)} or a config YAML path")
    return path


def model_label(model: str) -> str:
    """Short name of ``model`` for file names and tables (a YAML path becomes its stem)."""
    return model if model in MODELS else Path(model).stem


def task_config(model: str, overrides: Sequence[str] = (), *, device: str = "cpu", cache_dir: str | None = None):
    """The experiment config of ``model`` (see :func:`config_path`) with ``overrides`` applied."""
    from purl.config import load_config

    extra = [f"device={device}"] + ([f"cache_dir={cache_dir}"] if cache_dir else [])
    return load_config(config_path(model), list(overrides) + extra)


def build(config, *, progress: bool = True):
    """``build_task`` on the config's device (dense model from the cache, or pre-trained once)."""
    from purl.runtime import resolve_device
    from purl.task import build_task

    start = time.perf_counter()
    task = build_task(config, resolve_device(config.device), progress=progress)
    how = "cached" if task.from_cache else f"pre-trained in {task.pretrain_seconds:.0f}s"
    log(f"dense {config.model.name}: test top-1 {100 * task.dense_test.top1:.2f}% ({how}, "
        f"{time.perf_counter() - start:.1f}s)")
    return task


def log(message: str) -> None:
    """Progress line with a wall-clock stamp, flushed at once (scripts run under nohup)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def median(values: Iterable[float | None]) -> float | None:
    """Median of the non-missing values (None when there are none)."""
    clean = [float(v) for v in values if v is not None]
    return statistics.median(clean) if clean else None


def fmt(value: Any, digits: int = 2) -> str:
    """A table cell: floats with ``digits`` decimals, None as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], digits: int = 2) -> str:
    """A GitHub Markdown table of ``rows``; ``columns`` is ``[(key, header), ...]``."""
    head = "| " + " | ".join(h for _, h in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(fmt(r.get(k), digits) for k, _ in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write ``rows`` (dicts; nested values as JSON) to ``path``; columns in first-seen order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in row.items()})
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def set_threads(threads: int) -> None:
    """Torch intra-op threads (0 keeps torch's default)."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def pyplot():
    """matplotlib's pyplot with the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def per_model(values: list[str], defaults: dict[str, int], models: list[str]) -> dict[str, int]:
    """``N`` (all models) or ``MODEL=N`` pairs over ``defaults``."""
    out = {m: defaults.get(m, 0) for m in models}
    for value in values:
        if "=" in value:
            key, _, number = value.partition("=")
            out[key] = int(number)
        else:
            out = dict.fromkeys(models, int(value))
    return out
