"""Train a pruning agent, start to finish, in one readable function (:func:`train_agent`).

The steps, in order:

1. check the agent section (unknown algorithm / hyper-parameter fail before any work);
2. build ``agent.n_envs`` environments (:func:`agents.vec_env.make_vec_env`);
3. build the agent (:func:`agents.algorithms.make_agent`), or, with ``resume=True``
   and a checkpoint in ``output_dir/checkpoints``, load it (and its replay buffer);
4. log to ``output_dir/tb`` with SB3's logger and learn the remaining
   ``agent.total_timesteps - num_timesteps`` steps (``reset_num_timesteps=False``
   on resume, so step counts and curves continue);
5. on Ctrl-C, save a checkpoint and re-raise; at the end, save one too.

The returned :class:`AgentRun` holds the trained model, the best episode seen
(highest return among episodes meeting the target) and the search cost.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import configure
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from agents.algorithms import make_agent, validate_agent_config
from agents.callbacks import (
    BEST_EPISODE,
    BEST_MODEL,
    CHECKPOINT_DIR,
    EPISODES_CSV,
    PurlCallback,
    checkpoint_paths,
    read_json,
    truncate_episodes_csv,
)
from agents.vec_env import make_vec_env
from purl.config import ExperimentConfig
from purl.errors import CheckpointError
from purl.task import Task

TB_DIR = "tb"


@dataclass
class AgentRun:
    """A finished (or resumed-and-finished) agent training run.

    ``best`` is the best episode's record (return, accuracy, global_sparsity,
    flops, layer_sparsities, components, episode, env_step) or None when no
    episode met the target; ``best_return`` the highest-return episode that
    reached the target sparsity (whatever its accuracy), or None; ``best_accuracy`` the
    episode with the highest reward-split accuracy among those that reached the target sparsity. The search
    cost counts every session of the run:
    ``episodes`` and ``env_steps`` taken, ``evaluations`` of the pruned network
    the environments made, and ``wall_time_s`` spent learning.
    """

    model: BaseAlgorithm
    output_dir: Path
    best: dict[str, Any] | None
    episodes: int
    env_steps: int
    evaluations: int
    wall_time_s: float
    resumed_from: int | None = None
    best_return: dict[str, Any] | None = None
    best_accuracy: dict[str, Any] | None = None
    top_accurate: list[dict[str, Any]] | None = None

    @property
    def best_sparsities(self) -> dict[str, float] | None:
        """Per-layer sparsities of the best episode (None when no episode met the target)."""
        return dict(self.best["layer_sparsities"]) if self.best else None

    def search_cost(self) -> dict[str, Any]:
        """The cost columns of a results row."""
        return {"search_episodes": self.episodes, "search_env_steps": self.env_steps,
                "search_evaluations": self.evaluations, "search_wall_time_s": self.wall_time_s}


def _clear_previous_run(out: Path) -> None:
    """A fresh (non-resumed) run into an existing folder starts without the old run's artifacts."""
    for name in (BEST_MODEL, BEST_EPISODE, EPISODES_CSV):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
    for event_file in (out / TB_DIR).glob("events.out.tfevents.*"):
        event_file.unlink()


def _load_checkpoint(config: ExperimentConfig, out: Path, venv: Any, agent_device: str) -> tuple[BaseAlgorithm,
                                                                                              dict[str, Any]]:
    """The last checkpoint's model (with its replay buffer) bound to ``venv``, and its state JSON."""
    spec = validate_agent_config(config)
    paths = checkpoint_paths(out)
    state = read_json(paths["state"]) or {}
    saved = state.get("algo")
    if saved and saved != spec.name:
        raise CheckpointError(f"cannot resume: '{paths['model']}' holds a {saved} agent but agent.algo is "
                              f"{config.agent.algo}; use the same algorithm or another --output")
    try:
        model = spec.cls.load(paths["model"], env=venv, device=agent_device)
    except (ValueError, KeyError, OSError, RuntimeError) as exc:
        raise CheckpointError(f"cannot resume from '{paths['model']}': {str(exc).splitlines()[0]}") from None
    if isinstance(model, OffPolicyAlgorithm) and paths["replay_buffer"].is_file():
        model.load_replay_buffer(paths["replay_buffer"])
    state["num_timesteps"] = int(model.num_timesteps)
    return model, state


def train_agent(
    config: ExperimentConfig,
    *,
    output_dir: str | Path,
    device: str | torch.device = "cpu",
    resume: bool = False,
    task: Task | None = None,
    progress: bool = True,
    seed: int | None = None,
    figure_every: int = 100,
    torch_threads: int | None = 1,
) -> AgentRun:
    """Train ``config.agent`` on the pruning environment; write logs, checkpoints and the best policy.

    :param config: the experiment (env section = the MDP, agent section = the learner).
    :param output_dir: run folder: ``tb/``, ``checkpoints/``, ``best_model.zip``, ``best_episode.json``,
        ``episodes.csv``.
    :param device: where the environments evaluate the pruned network when no ``task`` is given
        (else the task's device); the agent's own small networks run on
        ``agent.hyperparams.device``, default CPU.
    :param resume: continue from ``output_dir/checkpoints/last.zip`` when it exists (else start fresh).
    :param task: the already built task, shared by in-process environments (built when None).
    :param progress: show SB3's progress bar (also needs ``agent.progress_bar``).
    :param seed: the agent's and environments' seed (default ``config.seed``).
    :param figure_every: episodes between per-layer sparsity figures in TensorBoard.
    :param torch_threads: PyTorch intra-op threads while learning (restored afterwards); None keeps
        the current setting. Default 1: the agent's updates are tiny MLP batches and the in-process
        environments evaluate small networks, where more threads mostly spin; on a busy 2-core
        machine ``configs/quick.yaml``'s search took 3.4 s with 1 thread and 26 s with 2.
    """
    validate_agent_config(config)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    seed = config.seed if seed is None else seed
    agent_device = str(config.agent.hyperparams.get("device", "cpu"))
    venv = make_vec_env(config, seed=seed, task=task, device=str(task.device if task is not None else device))
    try:
        can_resume = resume and checkpoint_paths(out)["model"].is_file()
        if can_resume:
            model, state = _load_checkpoint(config, out, venv, agent_device)
            truncate_episodes_csv(out, state["num_timesteps"])
        else:
            _clear_previous_run(out)
            model, state = make_agent(config, venv, seed=seed), {}
        model.set_logger(configure(str(out / TB_DIR), ["tensorboard"]))
        callback = PurlCallback(out, checkpoint_every=config.agent.checkpoint_every, figure_every=figure_every,
                                target_sparsity=config.env.target_sparsity, state=state if can_resume else None)
        callback.init_callback(model)  # so that an interrupt before the first step can still checkpoint
        remaining = config.agent.total_timesteps - model.num_timesteps
        if remaining > 0:
            threads = torch.get_num_threads()
            if torch_threads is not None:
                torch.set_num_threads(torch_threads)
            try:
                model.learn(remaining, callback=callback, reset_num_timesteps=not can_resume,
                            progress_bar=progress and config.agent.progress_bar)
            except KeyboardInterrupt:
                callback.save_checkpoint()  # resume with --resume from exactly here
                raise
            finally:
                torch.set_num_threads(threads)
        return AgentRun(model=model, output_dir=out, best=callback.best, best_return=callback.best_return,
                        best_accuracy=callback.best_accuracy, top_accurate=list(callback.top_accurate),
                        episodes=callback.episodes,
                        env_steps=int(model.num_timesteps), evaluations=callback.evaluations,
                        wall_time_s=callback.wall_time_s,
                        resumed_from=state.get("num_timesteps") if can_resume else None)
    finally:
        venv.close()
