"""``purl list``: what can be named in a config (models, datasets, configs, and the plug-ins when installed)."""

from __future__ import annotations

import argparse
import importlib
import re
from pathlib import Path

_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`([^`<]*?)\s*(?:<[^`>]*>)?`")  # :class:`~a.b.C`, :ref:`Text <target>`
_LITERAL = re.compile(r"``(.+?)``|`([^`]+)`")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", nargs="?", default="all",
                        choices=["all", "models", "datasets", "configs", "methods", "rewards", "agents"])
    parser.add_argument("--configs-dir", type=Path, default=None,
                        help="list the YAML configs of this folder (default: the shipped configs, usable by name "
                             "from any directory, e.g. --config quick)")


def _optional(module: str, attr: str) -> dict[str, str]:
    """Entries from a plug-in package's lister, or {} when that package is unavailable."""
    try:
        return getattr(importlib.import_module(module), attr)()
    except ImportError:
        return {}


def plain_text(text: str) -> str:
    """Docstring text without reStructuredText markup, for the terminal.

    Double-backtick literals and single-backtick text lose their backticks; roles keep their text
    (``:class:`~purl.task.Task``` gives ``Task``, ``:ref:`Text <target>``` gives ``Text``); whitespace
    runs become one space.
    """

    def role(match: re.Match[str]) -> str:
        target = match.group(1).strip()
        return target.rsplit(".", 1)[-1] if target.startswith("~") else target

    text = _ROLE.sub(role, text)
    text = _LITERAL.sub(lambda m: m.group(1) if m.group(1) is not None else m.group(2), text)
    return " ".join(text.split())


def _print(title: str, entries: dict[str, str], footer: str | None = None) -> None:
    print(f"{title}:")
    width = max((len(k) for k in entries), default=0)
    for name, text in entries.items():
        print(f"  {name.ljust(width)}  {plain_text(text)}")
    if footer:
        print(f"  ({plain_text(footer)})")


def _methods() -> dict[str, str]:
    """``purl compare`` method names: the agent and every allocator, saying which also run at channel granularity."""
    from purl.methods import METHODS, load_methods

    load_methods()
    entries = {"agent": METHODS.describe()["agent"]} if "agent" in METHODS else {}
    entries.update(_optional("purl.baselines", "list_allocators"))
    for name, text in _optional("purl.baselines.channel", "list_channel_allocators").items():
        entries[name] = f"{entries[name].rstrip('.')} (also at prune.granularity=channel)" if name in entries else text
    return entries


def _configs(folder: Path | None) -> dict[str, str]:
    """Config name -> file: the YAMLs of ``folder``, or the shipped configs when None."""
    if folder is None:
        from purl.config import shipped_configs

        return {name: str(path) for name, path in shipped_configs().items()}
    return {p.stem: str(p) for p in sorted(folder.glob("*.yaml"))}


def run(args: argparse.Namespace) -> int:
    from purl.data import list_datasets
    from purl.models import list_models
    from purl.pruning.layers import describe_prunable

    sections = {
        "models": list_models,
        "datasets": list_datasets,
        "configs": lambda: _configs(args.configs_dir),
        "methods": _methods,
        "rewards": lambda: _optional("purl.envs", "list_rewards"),
        "agents": lambda: _optional("purl.agents", "list_algorithms"),
    }
    footers = {"models": describe_prunable()}
    for name, lister in sections.items():
        if args.what in ("all", name):
            _print(name, lister(), footers.get(name))
    return 0
