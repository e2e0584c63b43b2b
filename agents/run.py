"""The agent as one pruning *method*: search, pick an allocation, prune, fine-tune, measure.

:func:`run_agent_method` produces one results row with the same fields as a
baseline's (``purl prune``) plus the search cost, so ``purl compare`` can put
the agent in the same table as Global Magnitude Pruning.

With ``env.prior: auto`` the cell first picks its prior, the best of ``env.prior_candidates`` by the
re-ranking proxy on the reward split (:func:`envs.prior.choose_prior`); ``prior_method`` names it,
``prior_choice_scores`` gives every candidate's score and ``prior_choice_wall_time_s`` its cost (inside
``wall_time_s``).

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

``*_meets_target`` is the sparsity rule only (:func:`envs.target.episode_meets_target`, the env's count
rule); ``*_meets_accuracy_target`` is filled only when ``env.target_accuracy`` is set (else None), and
``target_accuracy`` is that setting.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from purl.agents.callbacks import EPISODES_CSV
from purl.agents.policy import apply_policy, default_constraints, policy_episode
from purl.agents.selection import Candidate, choose, gather
from purl.agents.training import AgentRun, train_agent
from purl.agents.warm_start import check_warm_start, warm_config, warm_start_source
from purl.config import ExperimentConfig, MethodSpec, merge_config
from purl.envs.target import episode_meets_target
from purl.methods import METHODS, MethodCell, Pruned, PruningMethod, save_pruned
from purl.pipeline import finetune_and_measure, flops_budget_fields, slim_and_measure
from purl.pruning import MaskState
from purl.task import Task

if TYPE_CHECKING:
    from purl.envs.prior import PriorChoice


@dataclass(frozen=True)
class AgentOutcome(Pruned):
    """Everything :func:`search_and_prune` produced: the results row, the pruned fine-tuned model, the run."""

    run: AgentRun | None = None


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
        f"{prefix}_meets_target": episode_meets_target(episode, config.env.target_sparsity),
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


def _measure_allocation(task: Task, config: ExperimentConfig, chosen: Candidate, seed: int,
                        progress: bool) -> tuple[dict[str, Any], nn.Module, MaskState | None]:
    """Apply the reported allocation the way the same granularity's baseline cell would, fine-tune, measure."""
    if config.prune.granularity == "channel":
        keep = chosen.episode["channel_keep"]
        measured, model = slim_and_measure(task, config, lambda graph: keep, seed=seed, progress=progress)
        return measured, model, None
    model, masks = apply_policy(task, chosen.sparsities, default_constraints(task))
    measured = finetune_and_measure(task, model, masks, seed=seed, progress=progress)
    if config.budget_metric() == "flops":
        measured.update(flops_budget_fields(measured))
    return measured, model, masks


def _agent_row(config: ExperimentConfig, seed: int, measured: dict[str, Any], chosen: Candidate, run: AgentRun,
               output_dir: str | Path) -> dict[str, Any]:
    """The cell's identity, its measurements and what was reported (the search's episodes: :func:`_search_fields`)."""
    return {
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
        "policy_confirmation": chosen.confirmation,
        "learning_curve": learning_curve(output_dir),
    }


def _search_fields(config: ExperimentConfig, prior_choice: PriorChoice | None, chosen: Candidate, run: AgentRun,
                   greedy: dict[str, Any], prior: dict[str, Any] | None) -> dict[str, Any]:
    """The prior chosen, the search's notable episodes and its cost."""
    search_source, search_episode = best_search_episode(chosen, run)
    return {
        "prior_method": (prior_choice.label if prior_choice else
                         config.env.prior if config.env.action == "prior-relative" else None),
        "prior_choice_scores": prior_choice.scores if prior_choice else None,
        "prior_choice_wall_time_s": prior_choice.seconds if prior_choice else None,
        "best_search_episode_source": search_source,
        **_episode_fields("best_search_episode", search_episode, config),
        **_episode_fields("deterministic_policy", greedy, config),
        **_episode_fields("prior", prior, config),
        **_episode_fields("best_episode", run.best, config),
        **_episode_fields("most_accurate_episode", run.best_accuracy, config),
        **_episode_fields("best_return_episode", run.best_return, config),
        **run.search_cost(),
        "search_evaluations": run.evaluations + int(greedy.get("evaluations", 0))
        + int((prior or {}).get("evaluations", 0)),
    }


def search_and_prune(
    task: Task,
    config: ExperimentConfig,
    *,
    output_dir: str | Path,
    seed: int,
    progress: bool = True,
    resume: bool = False,
    previous: Path | None = None,
) -> AgentOutcome:
    """Train the agent on ``task``, apply its chosen allocation, fine-tune and measure (see module docs).

    ``previous``: the grid's cell folder at the previous target, which ``agent.warm_start`` starts from
    (:mod:`agents.warm_start`).
    """
    from purl.envs import PruningEnv
    from purl.envs.prior import resolve_prior

    start = time.perf_counter()
    config, prior_choice = resolve_prior(task, config, seed)  # env.prior 'auto' -> the best baseline, once per cell
    warm = warm_start_source(config, previous)
    if warm is not None:
        config = warm_config(config)
    run = train_agent(config, output_dir=output_dir, device=task.device, resume=resume, task=task,
                      progress=progress, seed=seed, warm_start=warm)
    eval_env = PruningEnv(config, task=task, device=task.device)
    try:
        greedy = policy_episode(run.model, eval_env, deterministic=True, seed=seed)
        prior = prior_episode(eval_env, seed)
    finally:
        eval_env.close()
    select_start = time.perf_counter()
    chosen = choose_allocation(task, config, run, greedy, prior, seed)
    select_seconds = time.perf_counter() - select_start
    measured, model, masks = _measure_allocation(task, config, chosen, seed, progress)
    row = {**_agent_row(config, seed, measured, chosen, run, output_dir),
           **_search_fields(config, prior_choice, chosen, run, greedy, prior),
           "selection_wall_time_s": select_seconds,
           "warm_started_from": None if warm is None else warm.parent.name,
           # every session of the run: an interrupted search's earlier sessions count too (never below the search's)
           "earlier_sessions_wall_time_s": run.earlier_wall_time_s,
           "wall_time_s": run.earlier_wall_time_s + time.perf_counter() - start}
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


def cell_config(base: ExperimentConfig, spec: MethodSpec, target_sparsity: float | None) -> ExperimentConfig:
    """The config of one ``agent`` cell: :func:`purl.config.merge_config` of ``base``, the spec and the target.

    ``env.target_sparsity`` is the cell's target; ``spec.min_threshold`` (when set) becomes
    ``constraints.min_threshold``; ``spec.kwargs`` are the method's overrides, nested
    (``{agent: {algo: sac}}``) or dotted (``{"agent.algo": "sac", "env.reward": "amc"}``), limited to the
    sections a method may change (:data:`purl.config.METHOD_SECTIONS`): so one comparison can hold
    several agents under different labels, and a sweep's grid points are such agents.
    """
    return merge_config(base, method_overrides=dict(spec.kwargs), target_sparsity=target_sparsity,
                        min_threshold=spec.min_threshold, where=f"method '{spec.label}': ")


def train_and_save(task: Any, config: ExperimentConfig, out: Path, *, seed: int, progress: bool = False,
                   resume: bool = False) -> tuple[dict[str, Any], AgentOutcome]:
    """One agent run as ``purl train`` makes it: a one-cell grid (search, prune, fine-tune: the compare cell's row,
    also appended to ``out/results.csv``), then ``pruned.pt`` and its exports; -> (row, outcome).

    ``task.config`` must be ``config`` (fine-tuning and constraints read the task's config).
    The row is ``purl train``'s results.json row (results.json is written by the CLI).
    """
    from purl.compare.runner import run_one_cell

    cell_row, outcome = run_one_cell(task, config, MethodSpec(label="agent", method="agent"),
                                     config.env.target_sparsity, seed, Path(out), progress=progress, resume=resume)
    row = {"command": "train", "dataset": config.data.name, "model": config.model.name, "device": str(task.device),
           **cell_row}
    meta = {k: row[k] for k in ("method", "algo", "target_sparsity", "achieved_sparsity", "after_test_top1",
                                "after_test_top5", "policy_source")}
    row.update(save_pruned(Path(out), config, outcome, task.data.input_shape, meta))
    return row, outcome


class AgentMethod(PruningMethod):
    """The :class:`purl.methods.PruningMethod` registered as ``agent``: search, select, prune, fine-tune, measure.

    A cell trains in its folder with ``resume=True``: a cell that was interrupted or failed after a
    checkpoint continues from it when the comparison is re-run.
    """

    def cell_config(self, base: ExperimentConfig, spec: MethodSpec, target_sparsity: float | None,
                    ) -> ExperimentConfig:
        """See :func:`cell_config`."""
        return cell_config(base, spec, target_sparsity)

    def validate(self, config: ExperimentConfig, spec: MethodSpec) -> None:
        """The agent section (algorithm, hyper-parameters) and the reward, before any pre-training."""
        from purl.agents.algorithms import validate_agent_config
        from purl.envs.granularity import granularity_class
        from purl.envs.rewards import make_reward
        from purl.errors import ConfigError

        try:
            granularity_class(config).check(config)  # at channel granularity: no weight Minimum Threshold, ...
        except ConfigError as exc:
            raise ConfigError(f"method '{spec.label}': {exc}") from None
        validate_agent_config(config)
        check_warm_start(config)
        make_reward(config.env.reward, config.env.reward_kwargs, config.prune.granularity)

    def prune(self, cell: MethodCell) -> AgentOutcome:
        """One agent cell (:func:`search_and_prune`; a compare cell resumes from its folder's checkpoint)."""
        return search_and_prune(cell.task, cell.config, output_dir=cell.folder, seed=cell.seed,
                                progress=cell.progress, resume=cell.resume, previous=cell.previous)



METHODS.add("agent", AgentMethod(), help="an RL agent searches the per-layer allocation (agent.*, env.*)")
