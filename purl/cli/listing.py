"""``purl list``: what can be named in a config (models, datasets, configs, and the plug-ins when installed)."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", nargs="?", default="all",
                        choices=["all", "models", "datasets", "configs", "methods", "rewards", "agents"])
    parser.add_argument("--configs-dir", type=Path, default=Path("configs"), help="where to look for YAML configs")


def _optional(module: str, attr: str) -> dict[str, str]:
    """Entries from a plug-in package's lister, or {} when that package is unavailable."""
    try:
        return getattr(importlib.import_module(module), attr)()
    except ImportError:
        return {}


def _print(title: str, entries: dict[str, str]) -> None:
    print(f"{title}:")
    width = max((len(k) for k in entries), default=0)
    for name, text in entries.items():
        print(f"  {name.ljust(width)}  {text}")


def run(args: argparse.Namespace) -> int:
    from purl.data import list_datasets
    from purl.models import list_models

    sections = {
        "models": list_models,
        "datasets": list_datasets,
        "configs": lambda: {p.stem: str(p) for p in sorted(args.configs_dir.glob("*.yaml"))},
        "methods": lambda: _optional("baselines", "list_allocators"),
        "rewards": lambda: _optional("envs", "list_rewards"),
        "agents": lambda: _optional("agents", "list_algorithms"),
    }
    for name, lister in sections.items():
        if args.what in ("all", name):
            _print(name, lister())
    return 0
