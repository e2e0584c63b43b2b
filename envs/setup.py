"""Construction steps of :class:`envs.PruningEnv` that do not depend on the granularity.

One place for: the render modes (the ``render_mode`` check and the ``rgb_array`` picture of the allocation),
where the env runs and which task it prunes, and the reward-split scorer with its BatchNorm recalibration
batches, the dense accuracy and the accuracy target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from purl.config import AUTO_BN_BATCHES, ExperimentConfig
from purl.errors import ConfigError
from purl.evaluator import RewardEvaluator, calibration_batches, has_batchnorm
from purl.runtime import resolve_device
from purl.task import Task

__all__ = ["RENDER_COLOURS", "RENDER_MODES", "Scoring", "allocation_image", "check_render_mode", "device_and_task",
           "reward_scoring"]

#: what both envs' ``render()`` supports: ``ansi`` (one line of text), ``rgb_array`` (:func:`allocation_image`;
#: the mode Stable-Baselines3's ``make_vec_env`` asks for when it builds an env by id)
RENDER_MODES: tuple[str, ...] = ("ansi", "rgb_array")
#: RGB colours of :func:`allocation_image`: background, a layer's empty slot and its sparsity bar, and the
#: same two for the layer the next action prunes
RENDER_COLOURS: dict[str, tuple[int, int, int]] = {
    "background": (255, 255, 255),
    "slot": (225, 225, 225),
    "bar": (31, 119, 180),
    "current_slot": (255, 214, 170),
    "current_bar": (255, 127, 14),
}
_HEIGHT, _BAR, _GAP, _MARGIN = 96, 8, 2, 4  # pixels; width 2*margin + n*bar + (n-1)*gap is even


def check_render_mode(render_mode: str | None, modes: Sequence[str]) -> str | None:
    """``render_mode`` if it is None or one of ``modes``; ConfigError naming the allowed ones otherwise."""
    if render_mode is not None and render_mode not in modes:
        raise ConfigError(f"render_mode '{render_mode}' is not supported; allowed: None, {', '.join(modes)}")
    return render_mode


def allocation_image(sparsities: Sequence[float], current: int | None) -> np.ndarray:
    """The allocation so far as an HxWx3 uint8 image (numpy only): one bar per prunable layer (channel group),
    left to right in pruning order, filled from the bottom to its sparsity; the layer at index ``current``
    (the next one the agent prunes; None when the episode is over) drawn in :data:`RENDER_COLOURS`'
    ``current_*`` colours. The size depends only on the number of layers, so every frame of an env matches."""
    n = max(len(sparsities), 1)
    inner = _HEIGHT - 2 * _MARGIN
    image = np.empty((_HEIGHT, 2 * _MARGIN + n * _BAR + (n - 1) * _GAP, 3), dtype=np.uint8)
    image[:] = RENDER_COLOURS["background"]
    for i, sparsity in enumerate(sparsities):
        left = _MARGIN + i * (_BAR + _GAP)
        slot, bar = ("current_slot", "current_bar") if i == current else ("slot", "bar")
        image[_MARGIN:_HEIGHT - _MARGIN, left:left + _BAR] = RENDER_COLOURS[slot]
        value = float(sparsity)
        filled = int(round(min(max(value, 0.0), 1.0) * inner)) if np.isfinite(value) else 0
        if filled:
            image[_HEIGHT - _MARGIN - filled:_HEIGHT - _MARGIN, left:left + _BAR] = RENDER_COLOURS[bar]
    return image


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
