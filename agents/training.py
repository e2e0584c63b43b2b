"""Train a pruning agent, start to finish, in one readable function (:func:`train_agent`).

The steps, in order:

1. check the agent section (unknown algorithm / hyper-parameter fail before any work);
2. build ``agent.n_envs`` environments (:func:`agents.vec_env.make_vec_env`);
3. build the agent (:func:`agents.algorithms.make_agent`), or, with ``resume=True``
   and a checkpoint in ``output_dir/checkpoints``, load it (and its replay buffer);
4. log to ``output_dir/tb`` with SB3's logger and learn the remaining
   ``agent.total_timesteps - num_timesteps`` steps (``reset_num_timesteps=False``
   on resume, so step counts and curves continue); the search takes exactly the env steps of an
   uninterrupted run (:func:`agents.callbacks.planned_steps`: ``agent.total_timesteps`` rounded up
   to whole rollouts); the callbacks are
   :class:`agents.callbacks.PurlCallback`, the ``CallbackList`` of the episode CSV, best-episode tracker,
   TensorBoard, checkpointer and exact-budget callbacks (plus the progress display);
5. on Ctrl-C/SIGTERM, save the checkpoint of the last exact point (usually the start of the rollout under way), say
   where a resume continues, and re-raise; at the end, save one too.

A resume is exact (:mod:`agents.resume`): the checkpoint is an exact point, and resuming puts back SB3's model,
the random states (torch, numpy, ``random``, the action space's), the environments' episodes (their RNG states,
their memoised scores) and the search record, and cuts ``episodes.csv`` back to its episodes; so the resumed search
ends with the numbers, episodes and evaluation count of an uninterrupted one, and its total wall time counts
every session (``earlier_wall_time_s``). A checkpoint that cannot be resumed exactly (written by an earlier PuRL,
its ``last_exact.pkl`` damaged, or a search with no exact point, e.g. gSDE) restarts the search from scratch,
saying so in one line; a resume says in one line where it continues.

A resume refuses, with one :class:`~purl.errors.CheckpointError` line and before any
work, a checkpoint whose state (``last.json``) is missing, unreadable or incomplete, or
that was made with another config or seed (:func:`check_resume`): continuing either
would silently report a degraded or a different run. Resuming loads the SB3 zip
(``checkpoints/last.zip``), which SB3 unpickles with cloudpickle: only resume folders
you trust.

The returned :class:`AgentRun` holds the trained model, the best episode seen
(highest return among episodes meeting the target) and the search cost.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import configure
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from purl.agents.algorithms import AlgorithmSpec, get_algorithm, make_agent
from purl.agents.callbacks import (
    BEST_EPISODE,
    BEST_MODEL,
    CHECKPOINT_DIR,
    EPISODES_CSV,
    FINAL_MODEL,
    PurlCallback,
    TqdmProgress,
    check_state,
    checkpoint_paths,
    planned_steps,
    read_json,
    save_model_atomic,
    truncate_episodes_csv,
)
from purl.agents.vec_env import make_vec_env
from purl.config import ExperimentConfig
from purl.errors import CheckpointError
from purl.progress import write
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
    earlier_wall_time_s: float = 0.0  # wall time of the run's earlier, interrupted sessions

    def search_cost(self) -> dict[str, Any]:
        """The cost columns of a results row."""
        return {"search_episodes": self.episodes, "search_env_steps": self.env_steps,
                "search_evaluations": self.evaluations, "search_wall_time_s": self.wall_time_s}


def _clear_previous_run(out: Path) -> None:
    """A fresh (non-resumed) run into an existing folder starts without the old run's artifacts."""
    for name in (BEST_MODEL, BEST_EPISODE, EPISODES_CSV, FINAL_MODEL):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
    for event_file in (out / TB_DIR).glob("events.out.tfevents.*"):
        event_file.unlink()


# keys that may differ between a run and its resume: checkpointing changes nothing; a larger
# agent.total_timesteps extends the search (a smaller one than the checkpoint's steps is an error)
RESUME_IGNORED = ("agent.checkpoint_every", "agent.total_timesteps")


def has_checkpoint(out: str | Path) -> bool:
    """Whether ``out/checkpoints`` holds any checkpoint file (complete or not)."""
    return any(path.exists() for path in checkpoint_paths(out).values())


def check_resume(config: ExperimentConfig, out: str | Path, seed: int) -> dict[str, Any]:
    """The checkpoint state of ``out`` when a resume may continue it, else CheckpointError (one line).

    Checks that ``last.zip`` and a complete ``last.json`` are there (:func:`agents.callbacks.check_state`)
    and that the state was written by a run with the same config (:func:`purl.config.config_differences`,
    ignoring ``RESUME_IGNORED``: a larger ``agent.total_timesteps`` extends the search) and the same seed.
    A state written before configs were saved in it is checked against ``out/config.yaml`` when there is one.
    """
    import yaml

    from purl.config import config_differences

    paths = checkpoint_paths(out)
    if not paths["model"].is_file():
        raise CheckpointError(f"cannot resume: '{paths['model']}' is missing (other checkpoint files are there); "
                              "run again without --resume into a new --output")
    state = check_state(read_json(paths["state"]), paths["state"])
    saved_config, where = state.get("config"), paths["state"]
    if saved_config is None and (Path(out) / "config.yaml").is_file():
        try:
            saved_config, where = yaml.safe_load((Path(out) / "config.yaml").read_text()), Path(out) / "config.yaml"
        except (OSError, yaml.YAMLError):
            saved_config = None
    if isinstance(saved_config, dict):
        diff = [k for k in config_differences(saved_config, config)
                if not any(k == key or k.startswith(key + ".") for key in RESUME_IGNORED)]
        if config.env.prior == "auto":  # a checkpoint holds what auto resolved to, a function of the keys compared
            diff = [k for k in diff if k not in ("env.prior", "env.prior_min_threshold")]
        if diff:
            raise CheckpointError(f"cannot resume: the run in '{out}' was made with a different config "
                                  f"(differing keys: {', '.join(diff)}; saved in '{where}'); use the same config "
                                  "or another --output")
    if state.get("seed") is not None and int(state["seed"]) != int(seed):
        raise CheckpointError(f"cannot resume: the run in '{out}' was made with seed {state['seed']}, not {seed}; "
                              "use the same seed or another --output")
    return state


def _load_checkpoint(config: ExperimentConfig, out: Path, venv: Any, agent_device: str,
                     state: dict[str, Any], spec: AlgorithmSpec) -> tuple[BaseAlgorithm, dict[str, Any]]:
    """The last checkpoint's model (with its replay buffer) bound to ``venv``, and its checked state."""
    paths = checkpoint_paths(out)
    state = dict(state)
    saved = state.get("algo")
    if saved and saved != spec.name:
        raise CheckpointError(f"cannot resume: '{paths['model']}' holds a {saved} agent but agent.algo is "
                              f"{config.agent.algo}; use the same algorithm or another --output")
    try:
        model = spec.cls.load(paths["model"], env=venv, device=agent_device)
    except (ValueError, KeyError, OSError, RuntimeError) as exc:
        raise CheckpointError(f"cannot resume from '{paths['model']}': {str(exc).splitlines()[0]}") from None
    if int(state["num_timesteps"]) != int(model.num_timesteps):  # written as a pair; a crash between the two
        raise CheckpointError(f"cannot resume: '{paths['model']}' is at env step {model.num_timesteps} but "
                              f"'{paths['state']}' at {state['num_timesteps']} (the checkpoint pair is torn); "
                              "run again without --resume into a new --output")
    if isinstance(model, OffPolicyAlgorithm) and paths["replay_buffer"].is_file():
        model.load_replay_buffer(paths["replay_buffer"])
    return model, state


def note(message: str) -> None:
    """One line on stderr, never on a progress bar's line."""
    write(message, file=sys.stderr)


def _learn(model: BaseAlgorithm, steps: int, callback: PurlCallback, extras: list[BaseCallback], *, fresh: bool,
           torch_threads: int | None, out: Path, budget: int) -> None:
    """``model.learn`` for ``steps`` with ``callback`` and ``extras`` in one ``CallbackList``; on Ctrl-C/SIGTERM
    save the checkpoint of the last exact point (:meth:`agents.callbacks.Checkpointer.save_checkpoint`), say
    where a resume continues, and re-raise; restore the thread count either way."""
    threads = torch.get_num_threads()
    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    try:
        model.learn(steps, callback=CallbackList([callback, *extras]), reset_num_timesteps=fresh, progress_bar=False)
    except KeyboardInterrupt:
        for extra in extras:  # the bar off the screen before the line below
            extra.on_training_end()
        checkpointer = callback.checkpointer
        stopped = int(model.num_timesteps)
        callback.save_checkpoint()  # --resume continues exactly from the point it writes
        state = read_json(checkpoint_paths(out)["state"]) or {}
        at = int(state.get("num_timesteps", 0))
        if checkpointer.kept_reason is not None:
            note(f"search: stopped at env step {stopped} of {budget}; the checkpoint at env step {at} is kept "
                 f"({checkpointer.kept_reason}): --resume redoes the steps after it exactly")
        elif (state.get("exact") or {}).get("continuable"):
            redo = f", so --resume redoes the {stopped - at} steps after it exactly" if stopped > at else ""
            note(f"search: stopped at env step {stopped} of {budget}; checkpoint saved at env step {at}, the last "
                 f"rollout start where every env began an episode{redo}")
        else:
            note(f"search: stopped at env step {stopped} of {budget}; the search cannot be resumed exactly "
                 f"({state.get('inexact_reason') or 'no exact point'}): --resume restarts it from scratch")
        raise
    finally:
        for extra in extras:  # close the bar on Ctrl-C too (idempotent)
            extra.on_training_end()
        torch.set_num_threads(threads)


def exact_resume_state(out: Path, state: dict[str, Any], total_timesteps: int) -> tuple[dict[str, Any] | None, str]:
    """``last_exact.pkl``'s payload when the checkpoint of ``out`` can be resumed exactly (with the
    ``agent.total_timesteps`` now asked for), else (None, why not)."""
    from purl.agents.resume import read_exact

    exact = state.get("exact")
    if not isinstance(exact, dict):
        return None, "its checkpoint was written by an earlier PuRL, without the search's random states"
    payload = read_exact(checkpoint_paths(out)["exact"])
    if payload is None or int(payload.get("num_timesteps", -1)) != int(state["num_timesteps"]):
        return None, f"'{checkpoint_paths(out)['exact']}' is missing, damaged or of another checkpoint"
    if payload.get("envs") is None and int(state["num_timesteps"]) < int(total_timesteps):
        why = state.get("inexact_reason") or "the search ended inside a rollout"
        return None, f"its checkpoint is not at an exact point: {why}"
    return payload, ""


def _start_or_resume(config: ExperimentConfig, out: Path, venv: VecEnv, *, seed: int, spec: AlgorithmSpec,
                     checked: dict[str, Any], can_resume: bool, warm_start: Path | None = None,
                     ) -> tuple[BaseAlgorithm, dict[str, Any] | None, dict[str, Any] | None]:
    """(agent, checkpoint state, exact-resume payload): the checkpointed search when it can be resumed exactly,
    else a fresh agent in a cleared folder (state and payload None), holding ``warm_start``'s policy when given."""
    exact = _exact_or_restart(out, checked, config.agent.total_timesteps) if can_resume else None
    if exact is None:
        _clear_previous_run(out)
        model = make_agent(config, venv, seed=seed, spec=spec)
        if warm_start is not None:
            from purl.agents.warm_start import load_warm_policy

            load_warm_policy(model, warm_start)
        return model, None, None
    agent_device = str(config.agent.hyperparams.get("device", "cpu"))
    model, state = _resumed_agent(config, out, venv, agent_device, checked, spec, exact)
    return model, state, exact


def _exact_or_restart(out: Path, checked: dict[str, Any], total_timesteps: int) -> dict[str, Any] | None:
    """The exact-resume payload of ``out``'s checkpoint, or None (said on stderr): never continue a different
    search silently, start it again."""
    exact, why = exact_resume_state(out, checked, total_timesteps)
    if exact is None:
        note(f"cannot resume the search in '{out}' exactly ({why}); restarting it from scratch")
    return exact


def _run_callback(config: ExperimentConfig, out: Path, model: BaseAlgorithm, state: dict[str, Any] | None,
                  exact: dict[str, Any] | None, *, budget: int, figure_every: int, seed: int) -> PurlCallback:
    """The search's callbacks (logs, checkpoints, best episodes), continuing ``state`` when resumed; initialised
    now, so that an interrupt before the first step can still checkpoint."""
    memos = [env["memo"] for env in exact["envs"]] if exact is not None and exact.get("envs") else None
    callback = PurlCallback(out, checkpoint_every=config.agent.checkpoint_every, figure_every=figure_every,
                            target_sparsity=config.env.target_sparsity, state=state, budget=budget,
                            accuracy_target=config.env.target_accuracy,
                            run={"config": config.to_dict(), "seed": int(seed)}, memos=memos)
    callback.init_callback(model)
    return callback


def _resumed_agent(config: ExperimentConfig, out: Path, venv: VecEnv, agent_device: str, checked: dict[str, Any],
                   spec: AlgorithmSpec, exact: dict[str, Any] | None) -> tuple[BaseAlgorithm, dict[str, Any]]:
    """The checkpointed agent and its state, its episodes.csv cut back to the checkpoint, the envs restored."""
    from purl.agents.resume import restore_envs

    model, state = _load_checkpoint(config, out, venv, agent_device, checked, spec)
    if model.num_timesteps > planned_steps(model, config.agent.total_timesteps):
        raise CheckpointError(f"cannot resume: the checkpoint in '{out}' already holds {model.num_timesteps} "
                              f"env steps, more than agent.total_timesteps={config.agent.total_timesteps}; "
                              "use a budget of at least that or another --output")
    truncate_episodes_csv(out, state["num_timesteps"], int(state["episodes"]))  # no episode twice
    if exact is not None and exact.get("envs") is not None:
        restore_envs(model, venv, exact)
    return model, state


def _agent_run(model: BaseAlgorithm, out: Path, callback: PurlCallback, resumed: dict[str, Any] | None) -> AgentRun:
    """What the search found, read off its callback (``resumed``: the checkpoint state it continued from)."""
    return AgentRun(model=model, output_dir=out, best=callback.best, best_return=callback.best_return,
                    best_accuracy=callback.best_accuracy, top_accurate=list(callback.top_accurate),
                    episodes=callback.episodes,
                    env_steps=int(model.num_timesteps), evaluations=callback.evaluations,
                    wall_time_s=callback.wall_time_s,
                    resumed_from=resumed.get("num_timesteps") if resumed is not None else None,
                    earlier_wall_time_s=callback.checkpointer.elapsed_base if resumed is not None else 0.0)


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
    warm_start: Path | None = None,
) -> AgentRun:
    """Train ``config.agent`` on the pruning environment; write logs, checkpoints and the best policy.

    :param config: the experiment (env section = the MDP, agent section = the learner).
    :param output_dir: run folder (``tb/``, ``checkpoints/``, ``best_model.zip``, ``final_model.zip``, ...).
    :param device: where the envs evaluate when no ``task`` is given (else the task's); the agent's own networks
        run on ``agent.hyperparams.device`` (CPU by default). ``config`` was validated at the edge: no re-check.
    :param resume: continue from ``output_dir/checkpoints/last.zip`` (none at all: start fresh); a damaged
        checkpoint or one of another config/seed is a CheckpointError (:func:`check_resume`), before any work.
    :param task: the already built task, shared by in-process environments (built when None).
    :param progress: show the search's tqdm progress bar on stderr (also needs ``agent.progress_bar``).
    :param seed: the agent's and environments' seed (default ``config.seed``).
    :param figure_every: episodes between TensorBoard's per-layer sparsity figures.
    :param torch_threads: PyTorch intra-op threads while learning (restored after; None keeps them; default 1:
        tiny MLP updates and small env networks, where more threads spin: quick 3.4 s vs 26 s).
    :param warm_start: a finished search's ``final_model.zip`` a fresh search starts from (:mod:`agents.warm_start`).
    """
    from purl.agents.resume import set_rng_state

    spec = get_algorithm(config.agent.algo)  # a lookup: the config was validated at the edge (AgentMethod.validate)
    (out := Path(output_dir)).mkdir(parents=True, exist_ok=True)
    seed = config.seed if seed is None else seed
    can_resume = resume and has_checkpoint(out)
    checked = check_resume(config, out, seed) if can_resume else {}  # before building anything
    venv = make_vec_env(config, seed=seed, task=task, device=str(task.device if task is not None else device))
    try:
        model, state, exact = _start_or_resume(config, out, venv, seed=seed, spec=spec, checked=checked,
                                               can_resume=can_resume, warm_start=warm_start)
        model.set_logger(configure(str(out / TB_DIR), ["tensorboard"]))
        budget = planned_steps(model, config.agent.total_timesteps)
        callback = _run_callback(config, out, model, state, exact, budget=budget, figure_every=figure_every,
                                 seed=seed)
        remaining = config.agent.total_timesteps - model.num_timesteps
        if state is not None:
            note(f"resuming the search in '{out}' from its checkpoint at env step {model.num_timesteps} of "
                 f"{budget} ({'the search is finished, reusing it' if remaining <= 0 else 'continuing exactly'})")
        if exact is not None:
            set_rng_state(model, exact["rng"])  # last: loading and resetting the envs above draw from them
        if remaining > 0:
            extras: list[BaseCallback] = []
            if progress and config.agent.progress_bar:  # one bar style in the CLI: tqdm (SB3's is rich)
                extras.append(TqdmProgress(budget))  # the env steps the search takes
            _learn(model, remaining, callback, extras, fresh=state is None, torch_threads=torch_threads, out=out,
                   budget=budget)
        save_model_atomic(model, out / FINAL_MODEL)  # only a finished search leaves one (agents.warm_start)
        return _agent_run(model, out, callback, state)
    finally:
        venv.close()
