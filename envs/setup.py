"""Construction steps both environments share (:class:`envs.PruningEnv`, :class:`envs.ChannelPruningEnv`).

One place for: the ``render_mode`` check, where the env runs and which task it prunes, and the reward-split
scorer with its BatchNorm recalibration batches, the dense accuracy and the accuracy target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from purl.config import AUTO_BN_BATCHES, ExperimentConfig
from purl.errors import ConfigError
from purl.evaluator import RewardEvaluator, calibration_batches, has_batchnorm
from purl.runtime import resolve_device
from purl.task import Task

__all__ = ["Scoring", "check_render_mode", "device_and_task", "reward_scoring"]


def check_render_mode(render_mode: str | None, modes: Sequence[str]) -> str | None:
    """``render_mode`` if it is None or one of ``modes``; ConfigError naming the allowed ones otherwise."""
    if render_mode is not None and render_mode not in modes:
        raise ConfigError(f"render_mode '{render_mode}' is not supported; allowed: None, {', '.join(modes)}")
    return render_mode


def device_and_task(config: ExperimentConfig, task: Task | None,
                    device: str | torch.device | None) -> tuple[torch.device, Task]:
    """The env's device (given, else the task's, else CPU) and its task (given, else the process-wide cached one)."""
    from purl.envs.task_cache import shared_task

    if device is not None:
        where = resolve_device(str(device))
    else:
        where = task.device if task is not None else torch.device("cpu")
    return where, task if task is not None else shared_task(config, where)


@dataclass
class Scoring:
    """The reward-split scorer of an env and what it measured at construction."""

    evaluator: RewardEvaluator
    bn_recalibration_batches: int
    dense_accuracy: float
    target_accuracy: float


def reward_scoring(config: ExperimentConfig, task: Task, device: torch.device, model: nn.Module,
                   names: Sequence[str], *, memoize: bool, prefix_cache_mb: float) -> Scoring:
    """A :class:`~purl.evaluator.RewardEvaluator` on the reward-validation split (``env.val_samples``), with
    fixed train-split batches (eval transforms) for BatchNorm recalibration (``env.bn_recalibration_batches``;
    ``auto``: on exactly when the model has BatchNorm), so an evaluation stays a deterministic function of the
    pruning state and memoised scores stay valid; then the dense accuracy (measured once) and the accuracy
    target (``env.target_accuracy``, else dense - ``env.accuracy_drop``)."""
    ecfg = config.env
    x, y = task.data.tensors("val", device, ecfg.val_samples)
    batches = ((AUTO_BN_BATCHES if has_batchnorm(model) else 0) if ecfg.bn_recalibration_batches == "auto"
               else int(ecfg.bn_recalibration_batches))
    calibration = calibration_batches(task.data, device, batches, config.data.batch_size)
    evaluator = RewardEvaluator(model, list(names), x, y, batch_size=config.data.eval_batch_size,
                                calibration=calibration, memoize=memoize, prefix_cache_mb=prefix_cache_mb)
    dense = evaluator.dense_accuracy()
    target = float(ecfg.target_accuracy) if ecfg.target_accuracy is not None else max(dense - ecfg.accuracy_drop, 0.0)
    return Scoring(evaluator, batches, dense, target)
