"""What one env step removes, and how it is counted: the :class:`Granularity` strategy of :class:`envs.PruningEnv`.

The env runs the MDP (reset, step, reward, observation, info) once, for every granularity. A granularity owns
everything that depends on the unit:

* the **units** of each step: ``names`` / ``sizes`` (a layer's weights, or a coupled channel group's channels),
  the observation rows (:meth:`profiles`) and the per-step share of the budget (:meth:`step_shares`);
* **apply and restore in place** on the env's own model (:meth:`apply`, :meth:`restore`);
* the **cost** of the plan so far, in three named units the episode keeps
  (:class:`envs.episode.EpisodeState`): prunable weights removed, MACs removed and the removed amount of
  the budget metric (``params`` or ``flops``), plus their dense totals (``total_weights``, ``dense_flops``,
  ``dense_budget``);
* the **budget's wall** (:meth:`bounds`), the prior's base count (:meth:`base_count`) and the landing rule
  (:meth:`reaches`);
* the **refusals** of a config it cannot run (:meth:`check`), one ConfigError line each, before any work.

The slimming and export tail after the search (a masked model, or a physically slimmed one) is the cell's
(:mod:`purl.methods`), chosen by the same ``prune.granularity``. Adding a granularity (N:M, attention
heads) is one subclass in this package plus a line in :data:`envs.granularity.GRANULARITIES`.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from purl.config import ExperimentConfig
from purl.envs.actions import ActionMap
from purl.envs.episode import EpisodeState
from purl.evaluator import RewardEvaluator
from purl.pruning.metrics import LayerProfile
from purl.task import Task

__all__ = ["Granularity", "Wall"]


class Wall(Protocol):
    """The interface the three budgets share (:class:`envs.budget.Budget`, :class:`envs.flops_budget.FlopsBudget`,
    :class:`envs.channel_budget.ChannelBudget`)."""

    max_removed: list[int]

    def bounds(self, i: int, ep: EpisodeState) -> tuple[int, int]: ...

    def spread(self, i: int, ep: EpisodeState, prior: Sequence[int]) -> int: ...

    def reaches(self, ep: EpisodeState) -> bool: ...


class Granularity(ABC):
    """The unit an env step removes (see the module docstring); built once per env, on its own model copy.

    Subclasses set :attr:`name` and :attr:`unit`; on ``model`` (the env's own copy) they build ``names``,
    ``sizes``, ``passes``, ``total_weights``, ``dense_flops`` and ``dense_budget`` in ``__init__``, and
    ``budget`` / ``prior`` in :meth:`build_budget` / :meth:`build_prior`.
    """

    name: ClassVar[str]
    """``prune.granularity`` value selecting this class."""
    unit: ClassVar[str]
    """What a step walks, for messages and ``render``: ``"layer"`` or ``"group"``."""

    model: nn.Module
    names: list[str]
    sizes: list[int]
    passes: int
    total_weights: int
    """Prunable Conv/Linear weights of the dense model (the unit of ``EpisodeState.weights_removed``)."""
    dense_flops: int
    """Conv/Linear MACs per sample of the dense model (the unit of ``EpisodeState.macs_removed``)."""
    dense_budget: float
    """The dense model's amount of the budget metric (the unit of ``EpisodeState.budget_removed``)."""
    budget_metric: str
    budget: Wall
    """The budget's wall (``bounds(i, ep)``, ``spread(i, ep, prior)``, ``reaches(ep)``, ``max_removed``)."""
    prior: list[int] | None = None

    def __init__(self, config: ExperimentConfig, task: Task, device: torch.device) -> None:
        """The env's own copy of the task's dense model, in eval mode on ``device`` (steps prune it in place), and
        the budget metric (``params`` or ``flops``)."""
        self.config, self.task, self.device = config, task, device
        self.budget_metric = config.budget_metric()
        self.model = copy.deepcopy(task.model).to(device)
        self.model.eval()

    @staticmethod
    @abstractmethod
    def check(config: ExperimentConfig) -> None:
        """Raise one ConfigError line for what this granularity cannot do with ``config`` (before any work)."""

    @abstractmethod
    def build_budget(self, config: ExperimentConfig) -> None:
        """The budget (its wall; checks the target is feasible) under ``config``'s constraints."""

    @abstractmethod
    def build_prior(self, config: ExperimentConfig, action_map: ActionMap) -> None:
        """The prior-relative mode's per-unit counts (``prior``; ``config.env.prior`` is resolved) and any
        table the action map precomputes."""

    @abstractmethod
    def profiles(self) -> list[LayerProfile]:
        """One observation row per unit group (:class:`envs.observation.ObservationBuilder`)."""

    @abstractmethod
    def step_shares(self) -> list[float]:
        """Each unit group's dense share of the budget metric (the reward's on-track schedule)."""

    def scoring_options(self, config: ExperimentConfig) -> tuple[bool, float]:
        """``(memoize, prefix_cache_mb)`` for the reward evaluator: memoise by counts, no prefix cache."""
        return bool(config.env.cache_evaluations), 0.0

    def bounds(self, ep: EpisodeState, i: int) -> tuple[int, int]:
        """``(lo, hi)`` units group ``i`` may have removed, given the episode so far (the budget's wall)."""
        return self.budget.bounds(i, ep)

    def base_count(self, ep: EpisodeState, i: int) -> int:
        """The prior-relative action's base count for group ``i`` (the prior, spread over what is left)."""
        assert self.prior is not None
        return self.budget.spread(i, ep, self.prior)

    @abstractmethod
    def request(self, action_map: ActionMap, action: Any, ep: EpisodeState, i: int,
                base: int | None) -> tuple[float, int]:
        """``(requested fraction, requested count)`` of ``action`` on group ``i``."""

    def snap(self, i: int, k: int, lo: int, hi: int) -> int:
        """An allowed count of group ``i`` for ``k`` already clipped to ``[lo, hi]`` (every count, by default)."""
        return k

    @abstractmethod
    def apply(self, ep: EpisodeState, i: int, k: int) -> None:
        """Remove ``k`` units of group ``i`` in place and update ``ep``'s counts and its three costs."""

    @abstractmethod
    def restore(self) -> None:
        """The dense weights again, in place."""

    def accuracy(self, evaluator: RewardEvaluator, ep: EpisodeState, i: int) -> float:
        """Reward-split accuracy of the plan so far (``i``: the group just pruned)."""
        return evaluator.accuracy(ep.counts)

    def reaches(self, ep: EpisodeState) -> bool:
        """Whether the plan so far is at the target (what the wall lands on)."""
        return self.budget.reaches(ep)

    @abstractmethod
    def flops_rest(self, ep: EpisodeState, i: int) -> float:
        """Current MACs of the groups after ``i`` (observation feature ``flops_rest``)."""

    def step_info(self, ep: EpisodeState) -> dict[str, Any]:
        """Extra ``info`` keys of a step (none by default)."""
        return {}

    def episode_info(self, ep: EpisodeState) -> dict[str, Any]:
        """Extra keys of the episode summary (none by default)."""
        return {}

    def finetune(self, ep: EpisodeState, steps: int) -> None:
        """``steps`` in-episode SGD steps with the removed units kept removed (``env.finetune_steps``)."""
        raise NotImplementedError(f"env.finetune_steps is not supported at prune.granularity {self.name}")

    def proxy_accuracy(self, ep: EpisodeState, *, steps: int, seed: int, val_samples: int | None) -> float:
        """Reward-split top-1 of the plan so far after the short-fine-tune proxy (``env.terminal_proxy_steps``)."""
        raise NotImplementedError(f"env.terminal_proxy_steps is not supported at prune.granularity {self.name}")


def fractions(counts: Sequence[int], sizes: Sequence[int]) -> list[float]:
    """Removed fraction of each unit group."""
    return [c / n if n else 0.0 for c, n in zip(counts, sizes, strict=True)]
