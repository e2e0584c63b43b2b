"""The one rule for "at the target sparsity", shared by the env, the callbacks and the result selection.

A run is at the target when it pruned at least ``round(target_sparsity x prunable weights)`` weights:
exactly what the budget (:mod:`envs.budget`) lands on. A fraction test (``pruned / total >= target``)
would miss that count by rounding, so every caller goes through :func:`meets_target` (counts) or
:func:`episode_meets_target` (an episode summary that carries the env's verdict).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["episode_meets_target", "meets_target", "target_count"]


def target_count(target_sparsity: float, total: int) -> int:
    """The pruned-weight count a run at ``target_sparsity`` of ``total`` prunable weights lands on."""
    return int(round(float(target_sparsity) * int(total)))


def meets_target(pruned: int, total: int, target_sparsity: float) -> bool:
    """Whether ``pruned`` of ``total`` prunable weights is at the target: ``pruned >= round(target x total)``."""
    return int(pruned) >= target_count(target_sparsity, total)


def episode_meets_target(episode: Mapping[str, Any], target_sparsity: float) -> bool:
    """Whether an episode summary is at the target sparsity: the env's verdict by :func:`meets_target`
    (its ``reaches_target`` key), or for records written before the env stored it, the global sparsity
    within 1e-9 of the target."""
    if "reaches_target" in episode:
        return bool(episode["reaches_target"])
    return float(episode["global_sparsity"]) >= target_sparsity - 1e-9
