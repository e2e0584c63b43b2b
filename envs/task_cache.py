"""The process-wide task cache: ``build_task`` once per (task, device) for every env of a process.

Each env deep-copies the cached task's dense model, so envs never share weights; the data and the
layer profiles are shared read-only. Kept out of :class:`envs.PruningEnv` so the cache's identity
(what makes two configs the same task) is one small function.
"""

from __future__ import annotations

import torch

from purl.config import ExperimentConfig
from purl.task import Task, build_task, task_identity

__all__ = ["shared_task"]

_TASKS: dict[str, Task] = {}


def shared_task(config: ExperimentConfig, device: torch.device) -> Task:
    """``build_task`` once per process for each (task, device); envs deep-copy the dense model."""
    key = task_identity(config, device)  # what makes two configs the same task
    task = _TASKS.get(key)
    if task is None:
        task = _TASKS[key] = build_task(config, device, progress=False)
    return task

