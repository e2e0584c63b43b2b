"""Sweeps of the agent as ``purl compare`` grids: ``purl train --grid KEY=V1,V2 --seeds 0 1``.

A sweep is a comparison grid whose method axis is a list of agent override sets: every point
of the cartesian product of the ``--grid`` axes becomes one ``agent`` entry of
``compare.methods`` (its label names the point, e.g. ``reward-amc__w_acc-2.0``; its ``kwargs`` are
the point's overrides), ``--seeds`` becomes ``compare.seeds`` and the config's
``env.target_sparsity`` (or a ``--grid env.target_sparsity=...`` axis) ``compare.sparsities``. It then
runs exactly like ``purl compare`` (:func:`purl.cli.compare.run_grid`): one dense model, one
``results.csv`` (resumed cell by cell), one ``summary.md`` and plots, ``cells/<label>-s<target>-seed<seed>/``
per unit (TensorBoard, checkpoints, episodes: ``tensorboard --logdir <output>/cells``), local or Ray.

Grid syntax
-----------
``--grid KEY=V1,V2,...`` (repeatable). Every value is YAML-parsed like a positional
``KEY=VALUE`` override. Values are split on commas at the *top level* only: commas
inside ``[...]``, ``{...}``, ``(...)`` or quotes do not split, so
``--grid env.sparsity_grid=[0.5,0.9],[0.2,0.4,0.8]`` has two values and
``--grid "env.reward_kwargs={w_acc: 1, w_sp: 2},{w_acc: 2, w_sp: 1}"`` too; quote a
string that contains a comma (``'a,b'``).

Which keys a grid may sweep: those a method may override (:data:`purl.config.METHOD_SECTIONS`:
``agent.*``, ``env.*``, ``prune.*``, ``constraints.*``). The grid's own keys (``data.*``, ``model.*``,
``pretrain.*``, ``finetune.*``, ``seed``, ...; :data:`purl.config.GRID_KEYS`) are the same for every
unit, as for every method of a comparison; sweeping them is one line naming the key and the way to
do it (one run per value, ``--seeds`` for seeds).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from purl.config import GRID_KEYS, ExperimentConfig, config_differences, merge_config, parse_override
from purl.errors import ConfigError, PurlError

__all__ = ["GridAxis", "config_differences", "parse_grid", "point_labels", "split_values", "sweep_config"]

MAX_LABEL = 90
TARGET = "env.target_sparsity"  # a grid over it is the comparison's target axis

FORBIDDEN_KEYS = {
    "seed": "use --seeds (the config's seed is the dense model's, shared by every unit)",
    "device": "use --device (one device per sweep)",
}


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
        if root in GRID_KEYS:
            raise ConfigError(f"--grid {key}: not a method setting ({GRID_KEYS[root]}); run one purl train or "
                              f"purl compare per value instead (e.g. purl compare -c CONFIG {key}=VALUE)")
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


# ----------------------------------------------------------------------------- grid -> compare config


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


def point_labels(points: Sequence[tuple[tuple[str, str], ...]]) -> list[str]:
    """Filesystem-safe, unique method labels of grid points, e.g. ``reward-purl__w_acc-2.0`` (``agent``: no grid).

    A label longer than ``MAX_LABEL`` characters is cut and ends with a hash of the point; so do
    labels that would otherwise collide (values that differ only in unsafe characters).
    """
    keys = [key for key, _ in points[0]] if points else []
    short = _short_keys(keys)
    full = [json.dumps([list(p) for p in point]) for point in points]
    labels = ["__".join(f"{_safe(short[k])}-{_safe(t)}" for k, t in point) or "agent" for point in points]
    labels = [f"{x[:MAX_LABEL - 9]}-{_digest(f)}" if len(x) > MAX_LABEL else x for x, f in zip(labels, full,
                                                                                                strict=True)]
    lowered = [x.lower() for x in labels]
    return [f"{x[:MAX_LABEL - 9]}-{_digest(f)}" if lowered.count(x.lower()) > 1 else x
            for x, f in zip(labels, full, strict=True)]


def sweep_config(base: ExperimentConfig, axes: Sequence[GridAxis], seeds: Sequence[int]) -> ExperimentConfig:
    """The comparison grid of a sweep: one ``agent`` method per grid point, ``seeds`` as ``compare.seeds``.

    Every point is validated with the agent method (config keys and values, algorithm, reward) before any
    work; one ConfigError names the grid point of the first invalid one.
    """
    from purl.config import MethodSpec
    from purl.methods import get_method

    seeds = [int(s) for s in seeds]
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ConfigError(f"--seeds: seed(s) {', '.join(map(str, repeated))} given twice")
    if not seeds:
        raise ConfigError("--seeds needs at least one seed")
    targets = next((list(a.values) for a in axes if a.key == TARGET), [base.env.target_sparsity])
    method_axes = [a for a in axes if a.key != TARGET]
    points = [tuple(zip([a.key for a in method_axes], texts, strict=True))
              for texts in itertools.product(*(a.texts for a in method_axes))]
    values = [dict(zip([a.key for a in method_axes], vals, strict=True))
              for vals in itertools.product(*(a.values for a in method_axes))]
    methods = [{"label": label, "method": "agent", "kwargs": kwargs}
               for label, kwargs in zip(point_labels(points), values, strict=True)]
    config = merge_config(base, cli_overrides=[f"compare.methods={json.dumps(methods)}",
                                               f"compare.seeds={json.dumps(seeds)}",
                                               f"compare.sparsities={json.dumps(targets)}"], where="--grid: ")
    agent = get_method("agent")
    for point, spec in zip(points, config.compare.method_specs(), strict=True):
        where = f"--grid {' '.join(f'{k}={t}' for k, t in point)}: " if point else ""
        try:
            agent.validate(agent.cell_config(config, MethodSpec(label=spec.label, method="agent",
                                                                kwargs=spec.kwargs), targets[0]), spec)
        except PurlError as exc:
            raise ConfigError(f"{where}{str(exc).removeprefix(f'method {spec.label!r}: ')}") from None
    return config
