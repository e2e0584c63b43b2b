"""Vectorised PuRL environments for training: ``DummyVecEnv`` in-process or ``SubprocVecEnv`` workers.

Each environment is made by an :class:`EnvFactory`, a small picklable object
(config as a plain dict, no model or data inside), so ``SubprocVecEnv`` can
ship it to worker processes. A worker builds its own task from the config: the
dense model is cached on disk (``cache_dir/dense``), so workers load it rather
than retrain. In-process (``dummy``) environments share the caller's task,
each pruning its own copy of the dense model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import torch
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from purl.config import ExperimentConfig
from purl.task import Task


@dataclass
class EnvFactory:
    """Build one Monitor-wrapped PuRL environment (picklable: holds only dicts and strings).

    :param config: the experiment config as ``ExperimentConfig.to_dict()`` (env section, constraints...).
    :param task_config: the config the dense model was built from, when it differs from ``config``
        (e.g. a compare cell whose agent seed differs from the task's); None = ``config``.
    :param device: where the environment evaluates the pruned network.
    :param task: an already built task to share (in-process only; never pickled to workers).
    :param threads: PyTorch threads of the process the env is built in (for worker processes, which
        share the machine's cores: 1 avoids oversubscription); None leaves the setting alone.
    """

    config: dict[str, Any]
    device: str = "cpu"
    task_config: dict[str, Any] | None = None
    task: Task | None = None
    threads: int | None = None

    def __call__(self) -> gym.Env:
        import envs  # noqa: F401  (registers purl/Pruning-v0)
        from envs import PruningEnv
        from purl.task import build_task

        if self.threads is not None:
            torch.set_num_threads(self.threads)
        config = ExperimentConfig.model_validate(self.config)
        task = self.task
        if task is None:
            task_config = ExperimentConfig.model_validate(self.task_config) if self.task_config else config
            task = build_task(task_config, torch.device(self.device), progress=False)
        return Monitor(PruningEnv(config, task=task, device=self.device))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["task"] = None  # a worker builds (loads) its own task from the on-disk cache
        return state


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
        factories = [EnvFactory(config.to_dict(), dev, task_config, threads=1) for _ in range(n_envs)]
        venv: VecEnv = SubprocVecEnv(factories)
    else:
        factories = [EnvFactory(config.to_dict(), dev, task_config, task) for _ in range(n_envs)]
        venv = DummyVecEnv(factories)  # type: ignore[arg-type]
    venv.seed(config.seed if seed is None else seed)
    return venv
