"""PuRL's pruning MDP as a Gymnasium environment, registered as ``purl/Pruning-v0`` on import.

>>> import gymnasium, envs
>>> env = gymnasium.make("purl/Pruning-v0")                     # the quick default task, on CPU
>>> env = envs.PruningEnv("configs/mnist5k-lenet5.yaml", reward="amc", action="sigma")
>>> env = gymnasium.make("purl/ChannelPruning-v0")             # the same class at prune.granularity channel
>>> venv = gymnasium.make_vec("purl/Pruning-v0", num_envs=2, vectorization_mode="async")  # forked workers

Worker processes that build an env by id (SB3's ``SubprocVecEnv``, ``AsyncVectorEnv`` under spawn/forkserver) find
the ids registered when they unpickle a config (``env_kwargs={"config": cfg}``); given no PuRL object, name the
module in the id: ``"purl.envs:purl/Pruning-v0"`` (:mod:`purl.gym_registration`).

Importing ``envs`` installs :func:`purl.runtime.install_fork_guard`, so workers forked from a process
that already ran torch ops (gymnasium's ``AsyncVectorEnv``) run single-threaded instead of deadlocking.

``envs`` builds on the ``purl`` core only (``purl`` never imports ``envs``). See
:mod:`envs.pruning_env` (the MDP and its ``info`` keys), :mod:`envs.granularity` (what a step removes: weights
or channel groups), :mod:`envs.observation` (feature table),
:mod:`envs.actions`, :mod:`envs.budget`, :mod:`envs.rewards`, :mod:`envs.target` (the one "at the
target sparsity" rule), :mod:`envs.factory` (the one picklable env factory), :mod:`envs.config` (config
resolution) and :mod:`envs.task_cache` (the process-wide task cache).
"""

from __future__ import annotations

from purl.envs.actions import InvalidActionError
from purl.envs.config import resolve_config
from purl.envs.factory import EnvFactory, make_env
from purl.envs.granularity import GRANULARITIES, Granularity, granularity_class
from purl.envs.observation import FEATURES, N_FEATURES
from purl.envs.pruning_env import PruningEnv
from purl.envs.rewards import REWARDS, Reward, RewardContext, make_reward
from purl.envs.target import episode_meets_target, meets_target, target_count
from purl.gym_registration import CHANNEL_ENV_ID, ENV_ID, register_gym_envs
from purl.runtime import install_fork_guard

# Forked vector-env workers (gymnasium's AsyncVectorEnv, default ``fork`` context) would otherwise
# deadlock in torch's inherited OpenMP pool on their first op; see purl.runtime.install_fork_guard.
install_fork_guard()

register_gym_envs()  # ENV_ID and CHANNEL_ENV_ID (purl.gym_registration: also on unpickling a config in a worker)


def list_rewards() -> dict[str, str]:
    """Reward name -> one-line description with its declared timing (per-step or terminal), for
    ``purl list rewards``."""
    described = REWARDS.describe()
    return {name: f"[{getattr(REWARDS.get(name), 'timing', 'per-step')}] {text}" for name, text in described.items()}


__all__ = [
    "CHANNEL_ENV_ID",
    "ENV_ID",
    "GRANULARITIES",
    "Granularity",
    "FEATURES",
    "N_FEATURES",
    "REWARDS",
    "EnvFactory",
    "granularity_class",
    "InvalidActionError",
    "PruningEnv",
    "Reward",
    "RewardContext",
    "make_env",
    "meets_target",
    "episode_meets_target",
    "resolve_config",
    "target_count",
    "list_rewards",
    "make_reward",
]
