"""Vectorised PuRL environments for training: ``DummyVecEnv`` in-process or ``SubprocVecEnv`` workers.

Each environment is made by :class:`envs.EnvFactory` (the one env factory; re-exported here), a small
picklable object (config as a plain dict, no model or data inside) wrapping the env in SB3's ``Monitor``,
so ``SubprocVecEnv`` can ship it to worker processes. A worker builds its own task from the config: the
dense model is cached on disk (``cache_dir/dense``), so workers load it rather
than retrain. In-process (``dummy``) environments share the caller's task,
each pruning its own copy of the dense model.
"""

from __future__ import annotations

from typing import Literal

import torch
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from purl.config import ExperimentConfig
from purl.envs.factory import EnvFactory
from purl.task import Task


def make_vec_env(
    config: ExperimentConfig,
    n_envs: int | None = None,
    vec_env: Literal["dummy", "subproc"] | None = None,
    seed: int | None = None,
    task: Task | None = None,
    *,
    device: str | torch.device | None = None,
) -> VecEnv:
    """``n_envs`` PuRL environments (default ``config.agent.n_envs``) as one VecEnv.

    ``vec_env`` (default ``config.agent.vec_env``) picks ``DummyVecEnv`` (one
    process; cheapest for small models) or ``SubprocVecEnv`` (one process per
    env; worth it when an env step is a long evaluation). Environment ``i`` is
    seeded with ``seed + i`` (default seed: ``config.seed``). ``task`` is shared
    by in-process environments; its config is what workers rebuild.
    """
    n_envs = n_envs or config.agent.n_envs
    kind = vec_env or config.agent.vec_env
    dev = str(device if device is not None else (task.device if task is not None else "cpu"))
    in_process = kind != "subproc" or n_envs == 1
    if in_process and task is None:
        from purl.task import build_task

        task = build_task(config, torch.device(dev), progress=False)  # one task shared by every in-process env
    task_config = task.config.to_dict() if task is not None else None
    if not in_process:
        factories = [EnvFactory(config.to_dict(), device=dev, task_config=task_config, threads=1, wrapper=Monitor)
                     for _ in range(n_envs)]
        venv: VecEnv = SubprocVecEnv(factories)
    else:
        factories = [EnvFactory(config.to_dict(), device=dev, task_config=task_config, task=task, wrapper=Monitor)
                     for _ in range(n_envs)]
        venv = DummyVecEnv(factories)  # type: ignore[arg-type]
    venv.seed(config.seed if seed is None else seed)
    return venv


__all__ = ["EnvFactory", "make_vec_env"]
