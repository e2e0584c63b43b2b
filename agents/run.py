"""The agent as one pruning *method*: search, pick an allocation, prune, fine-tune, measure.

:func:`run_agent_method` produces one results row with the same fields as a
baseline's (``purl prune``) plus the search cost, so ``purl compare`` can put
the agent in the same table as Global Magnitude Pruning.

Which allocation is reported: see :mod:`agents.selection` (candidates from the search and, in the
``prior-relative`` mode, the prior itself; near-collapsed ones dropped; ranked on the reward split,
re-ranked by a short fine-tune). Every candidate's allocation is recorded (``best_episode_*``,
``most_accurate_episode_*``, ``best_return_episode_*``, ``prior_*``, ``deterministic_policy_*`` fields), with
``policy_source`` naming the one that was pruned, fine-tuned and measured, and ``policy_proxy`` its
re-ranking score.

The reported allocation is usually *not* what the trained policy does when run deterministically: it is
the best allocation the search found. So the row says which it is (``reported_allocation``:
``best-search-episode``, ``deterministic-policy`` or ``prior``) and gives both side by side:
``best_search_episode_*`` (the reported search episode, or, when the policy or the prior was reported,
the search's most accurate episode at the target; ``best_search_episode_source`` names it) and
``deterministic_policy_*`` (one greedy rollout of the trained policy), each with its one-shot
reward-split accuracy and return. Only the reported allocation is fine-tuned and tested.

``*_meets_target`` is the sparsity rule only (:func:`agents.callbacks.reaches_target`, the env's count
rule); ``*_meets_accuracy_target`` is filled only when ``env.target_accuracy`` is set (else None), and
``target_accuracy`` is that setting.
"""

from __future__ import annotations

import copy
import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from agents.callbacks import EPISODES_CSV, reaches_target
from agents.policy import apply_policy, default_constraints, policy_episode
from agents.selection import Candidate, choose, gather
from agents.training import AgentRun, train_agent
from purl.config import ExperimentConfig, MethodSpec, config_from_dict
from purl.errors import ConfigError
from purl.pipeline import finetune_and_measure
from purl.pruning import MaskState
from purl.task import Task


@dataclass
class AgentOutcome:
    """Everything :func:`search_and_prune` produced: the results row, the pruned fine-tuned model, the run."""

    row: dict[str, Any]
    model: nn.Module
    masks: MaskState
    run: AgentRun


SEARCH_SOURCES = ("best-episode", "most-accurate-episode", "best-return-episode", "top-accurate")
REPORTED = {"prior": "prior", "deterministic": "deterministic-policy"}  # anything else: best-search-episode


def _episode_fields(prefix: str, episode: dict[str, Any] | None, config: ExperimentConfig) -> dict[str, Any]:
    """One allocation's fields: return, one-shot reward-split accuracy, sparsity, targets met, per-layer map.

    ``meets_target`` is the sparsity rule only; ``meets_accuracy_target`` only when an accuracy target is set.
    """
    if episode is None:
        return {f"{prefix}_return": None, f"{prefix}_accuracy": None, f"{prefix}_global_sparsity": None,
                f"{prefix}_meets_target": None, f"{prefix}_meets_accuracy_target": None,
                f"{prefix}_layer_sparsity": None}
    target_accuracy = config.env.target_accuracy
    return {
        f"{prefix}_return": float(episode["return"]),
        f"{prefix}_accuracy": float(episode["accuracy"]),
        f"{prefix}_global_sparsity": float(episode["global_sparsity"]),
        f"{prefix}_meets_target": reaches_target(episode, config.env.target_sparsity),
        f"{prefix}_meets_accuracy_target": (None if target_accuracy is None
                                            else float(episode["accuracy"]) >= float(target_accuracy) - 1e-12),
        f"{prefix}_layer_sparsity": {k: float(v) for k, v in episode["layer_sparsities"].items()},
    }


def best_search_episode(chosen: Candidate, run: AgentRun) -> tuple[str | None, dict[str, Any] | None]:
    """(source, episode) of the best allocation the search found: the reported one when it came from the
    search, else the search's most accurate episode at the target (None when there is none)."""
    if chosen.source.startswith(SEARCH_SOURCES):
        return chosen.source, chosen.episode
    if run.best_accuracy is not None:
        return "most-accurate-episode", run.best_accuracy
    return None, None


def prior_episode(env: Any, seed: int) -> dict[str, Any] | None:
    """The env's ``purl_episode`` for the zero action at every step (the prior allocation), or None when
    the env has no prior (an action mode other than ``prior-relative``)."""
    if getattr(env, "prior", None) is None:
        return None
    return policy_episode(_ZeroAction(env.action_space), env, seed=seed)


class _ZeroAction:
    """A policy that always plays the zero action (the prior-relative mode's prior allocation)."""

    def __init__(self, space: Any) -> None:
        self.action = np.zeros(space.shape, dtype=space.dtype)

    def predict(self, obs: Any, deterministic: bool = True) -> tuple[np.ndarray, None]:
        return self.action, None


def choose_allocation(task: Task, config: ExperimentConfig, run: AgentRun, greedy: dict[str, Any],
                      prior: dict[str, Any] | None, seed: int) -> Candidate:
    """The candidate to report (:mod:`agents.selection`)."""
    found = {"prior": prior, "best-episode": run.best, "most-accurate-episode": run.best_accuracy,
             "best-return-episode": run.best_return, "deterministic": greedy}
    return choose(gather(found, run.top_accurate or ()), task, config, seed)


def learning_curve(output_dir: str | Path) -> list[list[float]]:
    """``[[env_step, return], ...]`` of every training episode, from the run's ``episodes.csv``."""
    path = Path(output_dir) / EPISODES_CSV
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [[int(row["env_step"]), float(row["return"])] for row in csv.DictReader(handle)]


def search_and_prune(
    task: Task,
    config: ExperimentConfig,
    *,
    output_dir: str | Path,
    seed: int,
    progress: bool = True,
    resume: bool = False,
) -> AgentOutcome:
    """Train the agent on ``task``, apply its chosen allocation, fine-tune and measure (see module docs)."""
    from envs import PruningEnv

    start = time.perf_counter()
    run = train_agent(config, output_dir=output_dir, device=task.device, resume=resume, task=task,
                      progress=progress, seed=seed)
    eval_env = PruningEnv(config, task=task, device=task.device)
    try:
        greedy = policy_episode(run.model, eval_env, deterministic=True, seed=seed)
        prior = prior_episode(eval_env, seed)
    finally:
        eval_env.close()
    select_start = time.perf_counter()
    chosen = choose_allocation(task, config, run, greedy, prior, seed)
    select_seconds = time.perf_counter() - select_start
    search_source, search_episode = best_search_episode(chosen, run)
    model, masks = apply_policy(task, chosen.sparsities, default_constraints(task))
    measured = finetune_and_measure(task, model, masks, seed=seed, progress=progress)
    row: dict[str, Any] = {
        "method": "agent",
        "algo": config.agent.algo,
        "reward": config.env.reward,
        "action": config.env.action,
        "schedule": "oneshot",
        "seed": seed,
        "target_sparsity": config.env.target_sparsity,
        "target_accuracy": config.env.target_accuracy,
        **measured,
        "policy_source": chosen.source,
        "reported_allocation": REPORTED.get(chosen.source, "best-search-episode"),
        "policy_proxy": chosen.proxy,
        "selection_wall_time_s": select_seconds,
        "best_search_episode_source": search_source,
        **_episode_fields("best_search_episode", search_episode, config),
        **_episode_fields("deterministic_policy", greedy, config),
        **_episode_fields("prior", prior, config),
        **_episode_fields("best_episode", run.best, config),
        **_episode_fields("most_accurate_episode", run.best_accuracy, config),
        **_episode_fields("best_return_episode", run.best_return, config),
        **run.search_cost(),
        "learning_curve": learning_curve(output_dir),
        "search_evaluations": run.evaluations + int(greedy.get("evaluations", 0))
        + int((prior or {}).get("evaluations", 0)),
        "wall_time_s": time.perf_counter() - start,
    }
    return AgentOutcome(row=row, model=model, masks=masks, run=run)


def run_agent_method(
    task: Task,
    config: ExperimentConfig,
    *,
    output_dir: str | Path,
    seed: int,
    progress: bool = True,
    resume: bool = False,
) -> dict[str, Any]:
    """The agent method as one results row (what ``purl compare`` calls for its ``agent`` cells).

    ``config.env.target_sparsity`` is the target; ``seed`` seeds the agent,
    the environments and fine-tuning (the dense model is ``task``'s). Fields:
    ``method="agent"``, ``algo``, ``reward``, ``target_sparsity``,
    ``achieved_sparsity``, ``before_/after_test_top1/5`` (percent), dense and
    sparse FLOPs, ``compression_ratio``, ``theoretical_speedup``,
    ``collapsed_layers``, ``layer_sparsity``, ``wall_time_s`` (search +
    fine-tuning), the search cost (``search_episodes``, ``search_env_steps``,
    ``search_evaluations``, ``search_wall_time_s``), ``learning_curve``,
    ``policy_source``, ``reported_allocation`` and every candidate allocation
    (see the module docs).
    """
    return search_and_prune(task, config, output_dir=output_dir, seed=seed, progress=progress, resume=resume).row


def _merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    """Deep-merge ``update`` (nested or dotted keys) into ``into``."""
    for key, value in update.items():
        if "." in key:
            head, _, rest = key.partition(".")
            _merge(into, {head: {rest: value}})
        elif isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def cell_config(base: ExperimentConfig, spec: MethodSpec, target_sparsity: float) -> ExperimentConfig:
    """The config of one ``agent`` cell of a comparison.

    ``env.target_sparsity`` is the cell's target; ``spec.min_threshold`` (when set)
    becomes ``constraints.min_threshold``; ``spec.kwargs`` are config overrides,
    either nested (``{agent: {algo: sac}}``) or dotted (``{"agent.algo": "sac", "env.reward": "amc"}``),
    so one comparison can hold several agents under different labels.
    """
    raw = base.to_dict()
    _merge(raw, dict(spec.kwargs))
    raw.setdefault("env", {})["target_sparsity"] = float(target_sparsity)
    if spec.min_threshold is not None:
        raw.setdefault("constraints", {})["min_threshold"] = spec.min_threshold
    try:
        return config_from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"method '{spec.label}' kwargs: {exc}") from None


def compare_cell(task: Task, spec: MethodSpec, target_sparsity: float, seed: int, cell_dir: Path,
                 progress: bool = False) -> dict[str, Any]:
    """``purl compare`` runner for ``agent`` cells (see :mod:`purl.compare.runner`).

    Trains in ``cell_dir`` with ``resume=True``: a cell that was interrupted or
    failed after a checkpoint continues from it when the comparison is re-run.
    """
    config = cell_config(task.config, spec, target_sparsity)
    return run_agent_method(task, config, output_dir=cell_dir, seed=seed, progress=progress, resume=True)
