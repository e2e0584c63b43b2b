"""Warm-started searches: a grid's agent cell starts from the previous target's finished policy.

With ``agent.warm_start: previous-target``, the agent cell of a ``purl compare`` grid at the target listed after
another in ``compare.sparsities`` (same method label, same seed) builds its agent as usual (same algorithm,
hyper-parameters and seed), loads the policy that cell's search finished with (``final_model.zip`` in its
folder: SB3's ``set_parameters``, the policy's weights and optimizer state), and searches for
``agent.warm_start_fraction`` of ``agent.total_timesteps`` (default half: within the 1.5-2.4x speed-up reported
below, chosen before any measurement). The observation carries the
target (:mod:`envs.observation`), so one policy is meaningful across targets; the warm-started search refines
it instead of learning from nothing. Transfer between searches is known to speed up the convergence of RL
auto-pruning ("Boosting the Convergence of Reinforcement Learning-based Auto-pruning Using Historical Data",
IEEE TCAD 2024: 1.5-2.4x).

The first target of a chain, a one-cell run (``purl train``), and a cell whose predecessor has no finished
policy (it failed, or has not run) search from scratch with the full budget; the row says which
(``warm_started_from``: the previous target, or None). Each cell's search cost is its own: the predecessor's
search is counted in the predecessor's row, so summing a grid's ``search_wall_time_s`` counts every search once.
The chain needs the predecessor's files on the same machine, so it runs with ``compare.executor: local``.
"""

from __future__ import annotations

import math
from pathlib import Path

from stable_baselines3.common.base_class import BaseAlgorithm

from purl.agents.callbacks import FINAL_MODEL
from purl.config import ExperimentConfig
from purl.errors import CheckpointError, ConfigError

PREVIOUS_TARGET = "previous-target"


def warm_start_source(config: ExperimentConfig, previous: Path | None) -> Path | None:
    """The finished policy a cell's search starts from: ``previous/final_model.zip`` when
    ``agent.warm_start`` is ``previous-target`` and that file is there, else None (search from scratch)."""
    if config.agent.warm_start != PREVIOUS_TARGET or previous is None:
        return None
    source = Path(previous) / FINAL_MODEL
    return source if source.is_file() else None


def warm_config(config: ExperimentConfig) -> ExperimentConfig:
    """``config`` with the warm-started search's budget as its ``agent.total_timesteps``:
    ``ceil(agent.warm_start_fraction x total_timesteps)``, at least 1."""
    steps = max(1, math.ceil(config.agent.warm_start_fraction * config.agent.total_timesteps - 1e-9))
    return config.model_copy(update={"agent": config.agent.model_copy(update={"total_timesteps": steps})})


def load_warm_policy(model: BaseAlgorithm, source: Path) -> None:
    """Put the policy (weights and optimizer state) of ``source`` into the freshly built ``model``; a policy of
    another shape (another algorithm, network or env) is a CheckpointError naming the file."""
    try:
        model.set_parameters(str(source), exact_match=True, device=model.device)
    except (ValueError, KeyError, OSError, RuntimeError) as exc:
        raise CheckpointError(f"cannot warm-start from '{source}': {str(exc).splitlines()[0]} (agent.warm_start "
                              "needs the same algorithm, policy and model at every target)") from None


def check_warm_start(config: ExperimentConfig) -> None:
    """Refuse a warm start the grid cannot chain: a remote executor does not have the previous cell's files."""
    if config.agent.warm_start == PREVIOUS_TARGET and config.compare.executor != "local":
        raise ConfigError(f"agent.warm_start '{PREVIOUS_TARGET}' chains a seed's agent cells target by target "
                          f"on one machine; compare.executor '{config.compare.executor}' runs them apart: use "
                          "compare.executor local, or agent.warm_start none")
