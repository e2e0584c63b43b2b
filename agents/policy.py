"""From a trained agent to a pruned network: read the policy's allocation, then apply it exactly.

:func:`policy_sparsities` rolls out one episode (deterministic by default) and
returns the per-layer sparsities the environment actually applied (after its
constraints and budget), so they are feasible by construction.
:func:`apply_policy` prunes a fresh copy of the task's dense model to exactly
those per-layer sparsities through the baselines' ``layerwise`` allocator, the
same masking code every baseline uses; the pruned count of each layer is
checked against ``round(sparsity x numel)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from purl.errors import PruningError
from purl.pruning import MaskState, pruned_count
from purl.task import Task


def policy_episode(model: BaseAlgorithm, env: gym.Env | VecEnv, *, deterministic: bool = True,
                   seed: int | None = None) -> dict[str, Any]:
    """Roll out one episode of ``model`` on ``env``; return the env's ``purl_episode`` summary.

    The summary holds ``return``, ``components``, ``accuracy`` (reward-validation
    split), ``global_sparsity``, ``flops``, ``layer_sparsities`` and
    ``meets_target``; ``evaluations`` (network evaluations of this rollout) is
    added. With a VecEnv, the episode of its first environment is returned.
    """
    if isinstance(env, VecEnv):
        return _vec_episode(model, env, deterministic=deterministic)
    obs, info = env.reset(seed=seed)
    total = 0.0
    while True:
        action, _ = model.predict(obs, deterministic=deterministic)
        obs, reward, terminated, truncated, info = env.step(action)
        total += float(reward)
        if terminated or truncated:
            break
    summary = dict(info.get("purl_episode") or {})
    summary.setdefault("return", total)
    summary.setdefault("layer_sparsities", dict(info.get("layer_sparsities", {})))
    summary["evaluations"] = int(info.get("evaluations", 0))
    return summary


def _vec_episode(model: BaseAlgorithm, env: VecEnv, *, deterministic: bool) -> dict[str, Any]:
    obs = env.reset()
    states, starts = None, np.ones((env.num_envs,), dtype=bool)
    while True:
        actions, states = model.predict(obs, state=states, episode_start=starts, deterministic=deterministic)
        obs, _rewards, dones, infos = env.step(actions)
        starts = dones
        if dones[0]:
            info = infos[0]
            summary = dict(info["purl_episode"])
            summary["evaluations"] = int(info.get("evaluations", 0))
            return summary


def policy_sparsities(model: BaseAlgorithm, env: gym.Env | VecEnv, deterministic: bool = True) -> dict[str, float]:
    """Per-layer sparsities (layer name -> fraction pruned) the policy applies in one episode on ``env``."""
    return {k: float(v) for k, v in policy_episode(model, env, deterministic=deterministic)["layer_sparsities"].items()}


def default_constraints(task: Task) -> Any:
    """The task's constraints (``config.constraints``) as the object allocators take."""
    from purl.pruning.constraints import Constraints

    return Constraints.from_config(task.config.constraints)


def apply_policy(task: Task, sparsities: Mapping[str, float], constraints: Any = None) -> tuple[nn.Module, MaskState]:
    """A fresh copy of the dense model pruned to exactly ``sparsities`` (layer -> fraction), by magnitude.

    Goes through the baselines' ``layerwise`` allocator with no global target
    (``sparsity=None``: the map is applied as is, same magnitude masks as every
    baseline). ``constraints`` default to the task's. Raises PruningError if a
    layer is unknown, the map breaks the constraints, or a layer ends with a
    pruned count other than ``round(sparsity x numel)``.
    """
    from purl.baselines import get_allocator

    model, masks = task.fresh_copy()
    unknown = sorted(set(sparsities) - set(masks.names))
    if unknown:
        raise PruningError(f"policy names unknown layers {unknown}; prunable layers: {', '.join(masks.names)}")
    numels = masks.numels()
    wanted = {name: pruned_count(float(sparsities.get(name, 0.0)), numels[name]) for name in masks.names}
    allocator = get_allocator("layerwise", sparsities={name: float(s) for name, s in sparsities.items()})
    # sparsity=None: the map is applied as is, round(s * n) weights per layer (no rescaling to a target)
    allocator.prune(masks, None, constraints if constraints is not None else default_constraints(task))
    got = masks.pruned()
    wrong = {name: (got[name], wanted[name]) for name in masks.names if got[name] != wanted[name]}
    if wrong:
        detail = ", ".join(f"{n}: pruned {g} != {w}" for n, (g, w) in list(wrong.items())[:5])
        raise PruningError(f"the policy's sparsities could not be applied exactly ({detail})")
    return model, masks
