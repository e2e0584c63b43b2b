"""The fairness guard of a comparison folder: its rows all come from one grid config.

Resume matches cells by (label, target, seed) only, so without this guard rows of another data split, model,
fine-tuning budget or method setting would be mixed into one table silently. It lives in the library, in
:func:`purl.compare.runner.run_comparison`, so a library caller gets it as the CLI does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from purl.config import ExperimentConfig

GRID_FILE = "grid.json"  # the config a folder's rows were computed with (written before the first cell)


def check_same_grid(out: Path, config: ExperimentConfig) -> None:
    """Refuse to add cells to a folder whose finished rows came from another config; record the config.

    ``compare.*`` (which cells; except :data:`purl.config.RESULT_COMPARE_KEYS`) and the keys in
    :data:`purl.config.IGNORED_KEYS` may differ. Folders from before ``grid.json`` fall back to their
    ``config.yaml``.
    """
    from purl.config import config_differences
    from purl.errors import ConfigError
    from purl.results import write_json

    for name in (GRID_FILE, "config.yaml"):
        path = out / name
        if not path.is_file() or not (out / "results.csv").is_file():
            continue
        try:
            saved = json.loads(path.read_text()) if name == GRID_FILE else yaml.safe_load(path.read_text())
        except (OSError, ValueError, yaml.YAMLError):
            continue  # unreadable: nothing to compare with (the results table has its own repair)
        if isinstance(saved, dict):
            diff = config_differences(saved, config)
            if diff:
                shown = ", ".join(diff[:8]) + (f" and {len(diff) - 8} more" if len(diff) > 8 else "")
                raise ConfigError(f"'{out}' holds results of another config (differing keys: {shown}; saved in "
                                  f"'{path}'); its rows would be mixed with this run's: use another --output, or "
                                  "the same config to resume")
        break
    if not (out / GRID_FILE).is_file():
        write_json(out / GRID_FILE, config.to_dict())
