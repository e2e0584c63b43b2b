"""PuRL agents: Stable-Baselines3 learners that choose a sparsity for every layer of a network.

Python API (no CLI needed)::

    import torch
    from purl.agents import apply_policy, make_agent, policy_sparsities
    from purl.envs import PruningEnv
    from purl.config import load_config
    from purl.task import build_task

    config = load_config("configs/quick.yaml", ["agent.total_timesteps=384"])
    task = build_task(config, torch.device("cpu"))       # dense model, cached on disk
    env = PruningEnv(config, task=task)                  # one step per prunable layer
    agent = make_agent(config, env)                      # PPO by default (agent.algo)
    agent.learn(config.agent.total_timesteps)
    sparsities = policy_sparsities(agent, env)           # {layer: fraction pruned}
    model, masks = apply_policy(task, sparsities)        # exact, via the layerwise allocator

For the whole method as a results row (training with logging, checkpoints and
best-policy tracking, then the same fine-tuning and measurement as every
baseline) use :func:`run_agent_method`; ``purl train`` is its CLI.

Modules: :mod:`agents.algorithms` (registry, :func:`make_agent`),
:mod:`agents.vec_env` (vectorised envs), :mod:`agents.callbacks` (TensorBoard,
best policy, checkpoints), :mod:`agents.training` (:func:`train_agent`),
:mod:`agents.policy` (read and apply a policy), :mod:`agents.run` (the method: :class:`AgentMethod`,
registered as ``agent`` in :data:`purl.methods.METHODS` on import), :mod:`agents.sweep` (``purl train
--grid/--seeds`` as a compare grid).
"""

from purl.agents.algorithms import (
    ALGORITHMS,
    AlgorithmSpec,
    get_algorithm,
    list_algorithms,
    make_agent,
    validate_agent_config,
)
from purl.agents.callbacks import (
    BestEpisodeTracker,
    Checkpointer,
    EpisodeCsv,
    EpisodeTensorBoard,
    ExactBudgetStop,
    PurlCallback,
    TqdmProgress,
)
from purl.agents.policy import apply_policy, policy_episode, policy_sparsities
from purl.agents.run import AgentMethod, AgentOutcome, run_agent_method, search_and_prune, train_and_save
from purl.agents.sweep import parse_grid, sweep_config  # noqa: F401 - sweeps are compare grids of agents
from purl.agents.training import AgentRun, train_agent
from purl.agents.vec_env import make_vec_env
from purl.envs.factory import EnvFactory

__all__ = [
    "ALGORITHMS",
    "AgentMethod",
    "AgentOutcome",
    "AgentRun",
    "AlgorithmSpec",
    "BestEpisodeTracker",
    "Checkpointer",
    "EpisodeCsv",
    "EpisodeTensorBoard",
    "ExactBudgetStop",
    "EnvFactory",
    "PurlCallback",
    "TqdmProgress",
    "apply_policy",
    "get_algorithm",
    "list_algorithms",
    "make_agent",
    "make_vec_env",
    "policy_episode",
    "policy_sparsities",
    "run_agent_method",
    "search_and_prune",
    "train_agent",
    "train_and_save",
    "validate_agent_config",
]
