"""PuRL's pruning MDP as a Gymnasium environment, registered as ``purl/Pruning-v0`` on import.

>>> import gymnasium, envs
>>> env = gymnasium.make("purl/Pruning-v0")                     # the quick default task, on CPU
>>> env = envs.PruningEnv("configs/mnist5k-lenet5.yaml", reward="amc", action="sigma")
>>> venv = gymnasium.make_vec("purl/Pruning-v0", num_envs=2, vectorization_mode="async")  # forked workers

Importing ``envs`` installs :func:`purl.runtime.install_fork_guard`, so workers forked from a process
that already ran torch ops (gymnasium's ``AsyncVectorEnv``) run single-threaded instead of deadlocking.

``envs`` builds on the ``purl`` core only (``purl`` never imports ``envs``). See
:mod:`envs.pruning_env` (the MDP and its ``info`` keys), :mod:`envs.observation` (feature table),
:mod:`envs.actions`, :mod:`envs.budget` and :mod:`envs.rewards`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium

from envs.actions import InvalidActionError
from envs.observation import FEATURES, N_FEATURES
from envs.pruning_env import PruningEnv, resolve_config
from envs.rewards import REWARDS, Reward, RewardContext, make_reward
from purl.runtime import install_fork_guard

ENV_ID = "purl/Pruning-v0"

# Forked vector-env workers (gymnasium's AsyncVectorEnv, default ``fork`` context) would otherwise
# deadlock in torch's inherited OpenMP pool on their first op; see purl.runtime.install_fork_guard.
install_fork_guard()

if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="envs.pruning_env:PruningEnv", nondeterministic=False)


@dataclass
class EnvFactory:
    """A picklable ``() -> PruningEnv`` for SB3's ``DummyVecEnv`` / ``SubprocVecEnv``.

    Captures the config (not the task), so a subprocess builds its own task from the on-disk
    dense-model cache. With ``seed`` set, the env is reset once with ``seed + rank`` (its later
    resets continue that RNG stream) and its action space seeded the same way.
    """

    config: Any = None
    rank: int = 0
    seed: int | None = None
    device: str = "cpu"
    overrides: list[str] = field(default_factory=list)
    env_overrides: dict[str, Any] = field(default_factory=dict)

    def __call__(self) -> PruningEnv:
        env = PruningEnv(self.config, device=self.device, overrides=self.overrides, **self.env_overrides)
        if self.seed is not None:
            env.reset(seed=self.seed + self.rank)
            env.action_space.seed(self.seed + self.rank)
        return env


def make_env(
    config: Any = None,
    *,
    rank: int = 0,
    seed: int | None = None,
    device: str = "cpu",
    overrides: list[str] | None = None,
    **env_overrides: Any,
) -> EnvFactory:
    """A picklable env factory; the config is resolved and validated here, in the calling process."""
    if isinstance(config, str | Path) or overrides or env_overrides:
        config = resolve_config(config, None, overrides, env_overrides)
    return EnvFactory(config, rank, seed, device)


def list_rewards() -> dict[str, str]:
    """Reward name -> one-line description, for ``purl list rewards``."""
    return REWARDS.describe()


__all__ = [
    "ENV_ID",
    "FEATURES",
    "N_FEATURES",
    "REWARDS",
    "EnvFactory",
    "InvalidActionError",
    "PruningEnv",
    "Reward",
    "RewardContext",
    "make_env",
    "list_rewards",
    "make_reward",
]
