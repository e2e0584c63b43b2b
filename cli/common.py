"""Options every subcommand shares, and the helpers that turn them into a config and an output folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from purl.config import ExperimentConfig, load_config, save_config
from purl.errors import ConfigError
from purl.results import check_writable, write_json
from purl.runtime import configure_threads


def add_common_arguments(parser: argparse.ArgumentParser, *, output: bool = True) -> None:
    """--config, overrides, --device, --seed, --output, --quiet."""
    parser.add_argument("--config", "-c", type=Path, default=None,
                        help="experiment YAML: a path, or a shipped config's name from any directory, e.g. quick "
                             "(`purl list configs`; default: built-in quick task, digits + MLP)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, e.g. prune.sparsity=0.95 finetune.epochs=5")
    parser.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (default: config's, auto)")
    # parsed by seed_from_arg, not argparse's type=int: a bad value is one ConfigError line, not a usage block
    parser.add_argument("--seed", default=None, help="experiment seed, a non-negative integer (default: config's)")
    if output:
        parser.add_argument("--output", "-o", type=Path, default=None,
                            help="output folder (default: runs/<config name>/<command>)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def seed_from_arg(value: int | str, flag: str = "--seed") -> int:
    """The ``flag`` (``--seed``, ``--seeds``) value as an int, or one ConfigError line saying what is allowed."""
    try:
        seed = value if isinstance(value, int) and not isinstance(value, bool) else int(str(value).strip())
    except ValueError:
        seed = None
    if seed is None or seed < 0:
        raise ConfigError(f"{flag} {value!r} is not allowed: a seed must be a non-negative integer (0, 1, 2, ...)")
    return seed


def config_from_args(args: argparse.Namespace, extra: list[str] | None = None) -> ExperimentConfig:
    """Load the config with file, positional overrides, then explicit flags (flags win)."""
    overrides = list(args.overrides) + list(extra or [])
    if args.device is not None:
        overrides.append(f"device={args.device}")
    if args.seed is not None:
        overrides.append(f"seed={seed_from_arg(args.seed)}")
    config = load_config(args.config, overrides)
    configure_threads(config.threads)
    return config


def planned_output_dir(args: argparse.Namespace, config: ExperimentConfig, command: str) -> Path:
    """The run's output folder, checked for writability and locked for this run (:mod:`purl.lock`).

    Call it before any heavy work: a read-only location, a full disk, a file in the way or another run
    holding the folder is one :class:`~purl.errors.OutputError` line at once. The lock is released when the
    command ends (``purl.cli.main``); a folder it created that is still empty then is removed, so a run that
    fails early (a bad model name, a missing dataset) leaves no empty folder behind.
    """
    from purl import lock

    out = check_writable(args.output if args.output is not None else Path("runs") / config.name / command)
    lock.acquire(out, f"purl {command}")
    return out


def output_dir(args: argparse.Namespace, config: ExperimentConfig, command: str) -> Path:
    """The run's output folder (checked and created). The resolved config is written only by :func:`finish`,
    so a run that fails never overwrites the config of an earlier good run in the same folder."""
    out = planned_output_dir(args, config, command)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. --output names an existing file, or a read-only location
        raise ConfigError(f"cannot create output folder '{out}': {exc.strerror or exc}") from None
    return out


def finish(out: Path, results: dict[str, Any], lines: list[str], config: ExperimentConfig | None = None) -> int:
    """Write the resolved config and results.json (atomically), and for a one-cell run (a row with a cell's
    ``label`` and ``status``) its row in results.csv, the schema of a compare grid; then print a short summary."""
    if config is not None:
        save_config(config, out / "config.yaml")
    write_json(out / "results.json", results)
    if "label" in results and "status" in results:
        from purl.compare.runner import record_cell

        record_cell(out, results)
    for line in lines:
        print(line)
    print(f"results: {out / 'results.json'}")
    sys.stdout.flush()
    return 0


def export_line(fields: dict[str, Any], granularity: str) -> str:
    """The printed line about a run's ``.pt2``/``.onnx`` exports, saying plainly what the artefact is."""
    if fields.get("export_error"):
        return f"no .pt2/.onnx export: {fields['export_error']}"
    paths = fields.get("exports") or {}
    where = ", ".join(str(p) for p in paths.values())
    if granularity == "channel":
        return f"slimmed model (smaller shapes, reloads with torch or onnxruntime alone): {where}"
    return ("masked dense model (same shapes, zeros stored; NOT faster than the dense model, use "
            f"prune.granularity=channel for a smaller, faster one): {where}")
