"""The one env factory: a picklable ``() -> env`` for gymnasium and SB3 vector envs (in-process or workers).

:class:`EnvFactory` holds only a config (an :class:`~purl.config.ExperimentConfig`, its dict, a YAML path or
None) and small settings, so ``SubprocVecEnv`` can ship it to a worker process, which then builds its own
task from the on-disk dense-model cache. An in-process caller may hand it a built ``task`` to share
(never pickled). :func:`make_env` resolves and validates the config in the calling process first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

from purl.config import ExperimentConfig
from purl.envs.config import resolve_config
from purl.envs.pruning_env import PruningEnv
from purl.task import Task

__all__ = ["EnvFactory", "make_env"]


@dataclass
class EnvFactory:
    """Build one PuRL environment (picklable: the task is dropped when pickled).

    :param config: the experiment config: an ExperimentConfig, its ``to_dict()``, a YAML path or None.
    :param rank: added to ``seed`` (the env's index in a vector env).
    :param seed: when set, the env is reset once with ``seed + rank`` (its later resets continue that RNG
        stream) and its action space seeded the same way; None leaves seeding to the caller (``VecEnv.seed``).
    :param device: where the environment evaluates the pruned network.
    :param overrides: ``key.sub=value`` strings applied to the config.
    :param env_overrides: :class:`~purl.config.EnvConfig` fields applied last.
    :param task_config: the config the dense model was built from, when it differs from ``config``
        (e.g. a compare cell whose agent seed differs from the task's); None = ``config``.
    :param task: an already built task to share (in-process only; never pickled to workers).
    :param threads: PyTorch threads of the process the env is built in (worker processes share the
        machine's cores: 1 avoids oversubscription); None leaves the setting alone.
    :param wrapper: applied to the built env (e.g. SB3's ``Monitor``); None = the bare env.
    """

    config: Any = None
    rank: int = 0
    seed: int | None = None
    device: str = "cpu"
    overrides: list[str] = field(default_factory=list)
    env_overrides: dict[str, Any] = field(default_factory=dict)
    task_config: dict[str, Any] | None = None
    task: Task | None = None
    threads: int | None = None
    wrapper: Callable[[gym.Env], gym.Env] | None = None

    def __call__(self) -> gym.Env:
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        config = ExperimentConfig.model_validate(self.config) if isinstance(self.config, dict) else self.config
        task = self.task
        if task is None and self.task_config is not None:
            from purl.task import build_task

            task = build_task(ExperimentConfig.model_validate(self.task_config), torch.device(self.device),
                              progress=False)
        env: gym.Env = PruningEnv(config, task=task, device=self.device, overrides=self.overrides,
                                  **self.env_overrides)
        if self.seed is not None:
            env.reset(seed=self.seed + self.rank)
            env.action_space.seed(self.seed + self.rank)
        return self.wrapper(env) if self.wrapper is not None else env

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["task"] = None  # a worker builds (loads) its own task from the on-disk cache
        return state


def make_env(
    config: Any = None,
    *,
    rank: int = 0,
    seed: int | None = None,
    device: str = "cpu",
    overrides: list[str] | None = None,
    **env_overrides: Any,
) -> EnvFactory:
    """A picklable env factory; the config is resolved and validated here, in the calling process."""
    if isinstance(config, str | Path) or overrides or env_overrides:
        config = resolve_config(config, None, overrides, env_overrides)
    return EnvFactory(config, rank, seed, device)
