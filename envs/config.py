"""The env's config resolution: one :class:`~purl.config.ExperimentConfig` from what a caller passes.

Kept out of :class:`envs.PruningEnv` so a factory can resolve (and validate) a config in the calling
process, before any env or task is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from purl.config import ExperimentConfig, apply_overrides, config_from_dict, load_config, read_yaml
from purl.errors import ConfigError
from purl.task import Task

__all__ = ["resolve_config"]


def resolve_config(
    config: ExperimentConfig | str | Path | None,
    task: Task | None = None,
    overrides: list[str] | None = None,
    env_overrides: dict[str, Any] | None = None,
) -> ExperimentConfig:
    """The experiment config: ``config`` (object, YAML path, or None = the task's or the defaults),
    then ``overrides`` (``key.sub=value``), then ``env_overrides`` (EnvConfig fields), all validated."""
    if config is None:
        raw = task.config.to_dict() if task is not None else load_config(None).to_dict()
    elif isinstance(config, ExperimentConfig):
        raw = config.to_dict()
    elif isinstance(config, str | Path):
        raw = read_yaml(config)
    else:
        raise ConfigError(f"config must be an ExperimentConfig, a YAML path or None, got {type(config).__name__}")
    raw = apply_overrides(raw, list(overrides or []))
    if env_overrides:
        env = raw.get("env") or {}
        if not isinstance(env, dict):
            raise ConfigError("config section 'env' must be a mapping")
        raw["env"] = {**env, **env_overrides}
    return config_from_dict(raw)
