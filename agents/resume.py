"""Exact resume of an agent search: what a checkpoint holds beyond SB3's zip, and how a search is put back.

An interrupted search resumed with ``--resume`` (or a killed ``purl compare`` agent cell re-run) ends with the
numbers of an uninterrupted run. It resumes from an *exact point*: the start of a rollout (on-policy: after the
previous rollout was learnt from; off-policy: the next ``train_freq`` chunk) at which every environment has just
started an episode. There the whole search is described by

* SB3's zip (policy, optimisers, counters; plus the replay buffer off-policy), written at that point;
* the global random states SB3 draws from (torch, CUDA, numpy, Python's ``random``) and the action space's
  (:func:`rng_state`);
* per environment, ``np_random``'s state before it drew the episode's data seed and the evaluator's memoised
  scores (:meth:`envs.resume.ResumableEnv.resume_state`): the envs are rebuilt and reset into the same episode;
* the search record at that point (episodes, evaluations, best episodes: ``last.json``), so ``episodes.csv``
  is cut back to its episode count.

:class:`ExactPoint` is that state taken in memory at each exact point (the parameters copied, so an interrupt
in the middle of an update can roll back to it); :class:`agents.callbacks.Checkpointer` writes the latest one at
its period, at the end, and on Ctrl-C/SIGTERM (rolling the model back to it: the steps after it are redone on
resume, exactly). SB3 cannot resume inside a rollout, so a point inside one is never written. Where no exact
point can exist (:func:`inexact_reason`: gSDE exploration, a memory-optimised or goal replay buffer, an env
that cannot report its state) or the written state is missing, the resume restarts the search from scratch and
says so in one line (:mod:`agents.training`); it never continues a different search silently.
"""

from __future__ import annotations

import copy
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import DictReplayBuffer, ReplayBuffer
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from purl.envs.resume import RNG_OPTION
from purl.runtime import global_rng_state, set_global_rng_state

EXACT_VERSION = 1
#: model attributes that change while a rollout is collected or learnt from (saved in SB3's zip), rolled back
#: with the parameters to the exact point
MODEL_ATTRS = ("num_timesteps", "_episode_num", "_n_updates", "_n_calls", "_current_progress_remaining",
               "exploration_rate", "action_noise", "ep_info_buffer", "ep_success_buffer", "_last_obs",
               "_last_episode_starts", "_last_original_obs")


def inexact_reason(model: BaseAlgorithm, venv: VecEnv | None = None) -> str | None:
    """Why this search can have no exact point (None: it can)."""
    if getattr(model, "use_sde", False):
        return "gSDE exploration (use_sde) redraws its noise matrices from states SB3 does not save"
    if isinstance(model, OffPolicyAlgorithm):
        buffer = model.replay_buffer
        if getattr(model, "optimize_memory_usage", False):
            return "a memory-optimised replay buffer (optimize_memory_usage) cannot be rolled back"
        if buffer is not None and type(buffer) not in (ReplayBuffer, DictReplayBuffer):
            return f"a {type(buffer).__name__} cannot be rolled back"
    venv = venv if venv is not None else model.get_env()
    if venv is not None and not venv.has_attr("resume_state"):
        return "the environments cannot report their random state (not PuRL environments)"
    return None


def rng_state(model: BaseAlgorithm) -> dict[str, Any]:
    """The random states the search draws from: torch (and CUDA when in use), numpy, ``random``, action space."""
    state = global_rng_state()
    space_rng = getattr(model.action_space, "_np_random", None)
    if space_rng is not None:
        state["action_space"] = copy.deepcopy(space_rng.bit_generator.state)
    return state


def set_rng_state(model: BaseAlgorithm, state: dict[str, Any]) -> None:
    """Put back :func:`rng_state`'s states."""
    set_global_rng_state(state)
    if "action_space" in state:
        model.action_space.seed(0)  # creates the generator; its state is replaced next
        model.action_space.np_random.bit_generator.state = copy.deepcopy(state["action_space"])


def _torch_variables(model: BaseAlgorithm) -> dict[str, torch.Tensor]:
    from stable_baselines3.common.save_util import recursive_getattr

    _, names = model._get_torch_save_params()
    return {name: recursive_getattr(model, name).detach().clone() for name in names}


@dataclass
class ExactPoint:
    """The search's state at an exact point, in memory (see the module docs)."""

    num_timesteps: int
    params: dict[str, Any]
    variables: dict[str, torch.Tensor]
    attrs: dict[str, Any]
    rng: dict[str, Any]
    envs: list[dict[str, Any]]  # per env: rng_state, memo_size (entries kept by the checkpointer)
    buffer: tuple[int, bool] | None  # replay buffer (pos, full), off-policy
    record: dict[str, Any]  # the tracker's record (episodes, evaluations, best episodes), wall time excluded

    @classmethod
    def capture(cls, model: BaseAlgorithm, record: dict[str, Any], envs: list[dict[str, Any]]) -> ExactPoint:
        buffer = getattr(model, "replay_buffer", None)
        return cls(
            num_timesteps=int(model.num_timesteps),
            params=copy.deepcopy(model.get_parameters()),
            variables=_torch_variables(model),
            attrs={name: copy.deepcopy(getattr(model, name)) for name in MODEL_ATTRS if hasattr(model, name)},
            rng=rng_state(model),
            envs=envs,
            buffer=(int(buffer.pos), bool(buffer.full)) if buffer is not None else None,
            record=copy.deepcopy({k: v for k, v in record.items() if k != "wall_time_s"}),
        )

    def lost_reason(self, model: BaseAlgorithm) -> str | None:
        """Why the model can no longer be rolled back to this point (None: it can)."""
        buffer = getattr(model, "replay_buffer", None)
        if self.buffer is not None and buffer is not None:
            pos, full = self.buffer
            if bool(buffer.full) != full or (full and int(buffer.pos) != pos) or int(buffer.pos) < pos:
                return "the replay buffer wrapped around since, overwriting transitions of the point"
        return None

    def restore(self, model: BaseAlgorithm) -> None:
        """Roll ``model`` back to this point (parameters, optimisers, counters, replay buffer position)."""
        from stable_baselines3.common.save_util import recursive_getattr

        model.set_parameters(copy.deepcopy(self.params), exact_match=True, device=model.device)
        with torch.no_grad():
            for name, value in self.variables.items():
                recursive_getattr(model, name).copy_(value)
        for name, value in self.attrs.items():
            setattr(model, name, copy.deepcopy(value))
        buffer = getattr(model, "replay_buffer", None)
        if self.buffer is not None and buffer is not None:
            buffer.pos, buffer.full = self.buffer

    def payload(self, memos: list[list[Any]]) -> dict[str, Any]:
        """What ``last_exact.pkl`` holds: the random states and, per env, its RNG state and memoised scores."""
        return {"version": EXACT_VERSION, "num_timesteps": self.num_timesteps, "rng": self.rng,
                "envs": [{"rng_state": env["rng_state"], "memo": list(memo[:env["memo_size"]])}
                         for env, memo in zip(self.envs, memos, strict=True)]}


def read_exact(path: Path) -> dict[str, Any] | None:
    """``last_exact.pkl``'s payload, or None when it is missing, unreadable or of another version."""
    try:
        payload = pickle.loads(path.read_bytes())
    except Exception:  # noqa: BLE001 - any damage means: not resumable exactly
        return None
    if not isinstance(payload, dict) or payload.get("version") != EXACT_VERSION:
        return None
    return payload


def restore_envs(model: BaseAlgorithm, venv: VecEnv, payload: dict[str, Any]) -> None:
    """Reset the freshly built ``venv`` into the episodes of the exact point (RNG states, memoised scores) and
    hand its observation to ``model`` (SB3 then continues without resetting)."""
    envs = payload["envs"]
    if len(envs) != venv.num_envs:
        raise ValueError(f"the checkpoint holds {len(envs)} environments, the run has {venv.num_envs}")
    for index, env in enumerate(envs):
        if env["memo"]:
            venv.env_method("load_memo", env["memo"], indices=[index])
    venv.set_options([{RNG_OPTION: env["rng_state"]} if env["rng_state"] is not None else {} for env in envs])
    model._last_obs = venv.reset()  # type: ignore[assignment]
    model._last_episode_starts = np.ones((venv.num_envs,), dtype=bool)

