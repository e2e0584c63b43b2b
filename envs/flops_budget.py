"""AMC's action wall on a FLOPs budget at weight granularity (``prune.budget_metric: flops``).

The target ``t`` is a fraction of the dense model's Conv/Linear MACs to remove, ``T = t x dense MACs``.
Pruning ``k`` weights of layer ``i`` removes ``k x u_i`` MACs, ``u_i = macs_i / numel_i`` (a layer's sparse
MACs scale with its kept weights, :func:`purl.pruning.pruning_stats`). With ``R`` the MACs already removed
by the earlier layers and ``need = T - R``:

* **never overshoot**: ``hi = min(max_removed[i], ceil(need / u_i))``;
* **action wall**: ``lo = ceil((need - sum of max_removed[j] x u_j over the later layers) / u_i)``, so the
  later layers at their maxima can still reach ``T``.

On the last layer ``lo == hi == ceil(need / u)``: an episode ends having removed at least ``T`` MACs and
less than one weight's MACs more (``u`` of the layer whose step crossed ``T``; after it every ``hi`` is 0).
One pass only (``env.passes: 1``), since a later pass's cost depends on what earlier passes already
removed. Feasibility is checked once.

Same interface as :class:`envs.budget.Budget` (``bounds``, ``spread``, ``reaches``, ``max_removed``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from purl.config import ExperimentConfig
from purl.envs.episode import EpisodeState
from purl.errors import ConfigError

__all__ = ["FlopsBudget", "check_flops_env_config"]


def check_flops_env_config(config: ExperimentConfig) -> None:
    """What a FLOPs budget at weight granularity cannot do, as one ConfigError line (checked before any work)."""
    if config.prune.granularity == "weight" and config.budget_metric() == "flops" and config.env.passes != 1:
        raise ConfigError("env.passes > 1 is not supported with budget_metric flops; set env.passes=1")


class FlopsBudget:
    """Bounds on the pruned count of each layer so that the removed MACs land on ``target x dense_macs``."""

    metric = "flops"

    def __init__(
        self,
        numels: Sequence[int],
        macs: Sequence[float],
        max_removed: Sequence[int],
        target_sparsity: float,
        dense_macs: float,
        *,
        enabled: bool = True,
    ) -> None:
        self.numels = [int(n) for n in numels]
        self.unit = [float(m) / n if n else 0.0 for m, n in zip(macs, self.numels, strict=True)]
        self.max_removed = [int(min(max(m, 0), n)) for m, n in zip(max_removed, self.numels, strict=True)]
        self.enabled = bool(enabled)
        self.dense = float(dense_macs)
        self.target_sparsity = float(target_sparsity)
        self.target = self.target_sparsity * self.dense
        self.suffix_max = [0.0] * (len(self.numels) + 1)  # MACs the layers i.. remove at their maxima
        for i in range(len(self.numels) - 1, -1, -1):
            self.suffix_max[i] = self.suffix_max[i + 1] + self.max_removed[i] * self.unit[i]
        self.max_feasible = self.suffix_max[0] / self.dense if self.dense else 0.0
        if self.enabled and self.target > self.suffix_max[0] + 1e-6:
            raise ConfigError(
                f"env.target_sparsity={self.target_sparsity} of the FLOPs is infeasible under the constraints; "
                f"the prunable layers can remove at most {self.max_feasible:.6f} of the dense FLOPs"
            )

    def reaches(self, ep: EpisodeState) -> bool:
        """Whether the episode's removed MACs are at the target (what the wall lands on)."""
        return ep.macs_removed >= self.target - 1e-6

    def bounds(self, i: int, ep: EpisodeState) -> tuple[int, int]:
        """``(lo, hi)`` for layer ``i`` given the MACs the other layers removed."""
        top = self.max_removed[i]
        if not self.enabled:
            return 0, top
        u = self.unit[i]
        need = self.target - (ep.macs_removed - ep.removed[i])
        if u <= 0:
            return 0, 0 if need > 0 else top
        hi = min(top, max(math.ceil(need / u - 1e-9), 0))
        lo = min(max(math.ceil((need - self.suffix_max[i + 1]) / u - 1e-9), 0), hi)
        return lo, hi

    def spread(self, i: int, ep: EpisodeState, prior: Sequence[int]) -> int:
        """Base count of layer ``i`` for the prior-relative action: the prior's counts of layers ``i..`` scaled by
        one factor so that they remove exactly the MACs still needed (see :meth:`envs.budget.Budget.spread`)."""
        if not self.enabled:
            return int(prior[i])
        rest = sum(int(p) * self.unit[j] for j, p in enumerate(prior) if j >= i)
        need = self.target - (ep.macs_removed - ep.removed[i])
        if rest <= 0:
            room = self.suffix_max[i]
            return int(round(self.max_removed[i] * need / room)) if room > 0 else 0
        return int(round(int(prior[i]) * need / rest))
