"""AMC's action wall for channel pruning: per-group bounds so an episode lands on a FLOPs or params budget.

The channel granularity (:mod:`envs.granularity.channel`) removes ``r_i`` channels from channel group ``i``, in
model order. The cost of a plan (Conv/Linear MACs per sample or parameters, :meth:`ChannelGraph.macs` /
:meth:`ChannelGraph.params`) is exact and non-increasing in every ``r_i`` but *coupled*: a layer between
two groups scales with both groups' kept fractions. So the wall is computed on the exact cost, by binary
search, instead of from per-layer constants:

* ``lo_i`` (no undershoot, AMC's wall): the fewest channels group ``i`` may lose so that the later groups,
  at their maximum removal, can still bring the cost down to the target;
* ``hi_i`` (no overshoot): the fewest channels whose removal, with the later groups left whole, already
  brings the cost to the target. Removing more would prune beyond the budget for nothing.

``lo_i <= hi_i`` always (the later groups at their maximum cost no more than left whole). On the last
group both bounds are the first removal count that reaches the target, so an episode ends with a cost
``<= target`` and below it by less than one step's cost: the same landing rule
(:func:`baselines.channel.channel_tolerance`) as the channel allocators. The searches run over each group's
*allowed* removal counts (all counts, or with ``prune.channel_multiple`` those that keep a multiple of it),
and :meth:`ChannelBudget.snap` moves a request to the nearest allowed count inside the bounds. Feasibility
(every group at its maximum reaches the target) is checked once; the error names the reachable minimum.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from purl.envs.episode import EpisodeState
from purl.errors import ConfigError
from purl.pruning.channels import ChannelGraph

__all__ = ["ChannelBudget"]


class ChannelBudget:
    """Bounds on the channels each group loses, on the exact cost of the plan so far.

    Same interface as :class:`envs.budget.Budget` (``bounds``, ``spread``, ``reaches``, ``max_removed``).

    :param graph: the model's channel graph (its groups in model order are the episode's steps).
    :param options: the channel counts each group may lose (constraints, ``prune.channel_multiple`` and the
        action range; 0 is always allowed).
    :param target_sparsity: the fraction of the ``metric`` to remove (``0.5`` with ``flops``: keep half the MACs).
    :param metric: ``"flops"`` (Conv/Linear MACs per sample) or ``"params"`` (all parameters).
    :param enabled: False: no wall (``lo = 0``, ``hi = max_removed``), the episode lands wherever it lands.
    """

    def __init__(self, graph: ChannelGraph, options: Sequence[Sequence[int]], target_sparsity: float,
                 metric: str, *, enabled: bool = True) -> None:
        self.graph = graph
        self.names = [g.name for g in graph.groups]
        self.sizes = [g.size for g in graph.groups]
        self.options = [sorted({0, *(min(max(int(r), 0), s - 1) for r in o)})
                        for o, s in zip(options, self.sizes, strict=True)]
        self.max_removed = [o[-1] for o in self.options]
        self.metric = metric
        self.enabled = bool(enabled)
        self.dense = graph.dense_macs if metric == "flops" else graph.dense_params
        self.target_sparsity = float(target_sparsity)
        self.target = (1.0 - self.target_sparsity) * self.dense
        self.min_cost = self.cost(self.max_removed)
        if self.enabled and self.min_cost > self.target + 1e-9:
            raise ConfigError(
                f"env.target_sparsity={self.target_sparsity:g} of the {metric} is infeasible at channel granularity "
                f"under the constraints (prune.min_channels, constraints.keep_dense, env.max_sparsity): removing "
                f"every allowed channel leaves {self.min_cost / self.dense:.4f} of the dense {metric}, so the largest "
                f"feasible target is {1 - self.min_cost / self.dense:.4f}"
            )

    def cost(self, removed: Sequence[int]) -> int:
        """Exact cost of the model with ``removed[i]`` channels gone from group ``i``."""
        keep = {name: size - int(r) for name, size, r in zip(self.names, self.sizes, removed, strict=True)}
        return self.graph.macs(keep) if self.metric == "flops" else self.graph.params(keep)

    def reaches(self, ep: EpisodeState) -> bool:
        """Whether the episode's plan is at or below the budget (what the wall lands on)."""
        return self.dense - ep.budget_removed <= self.target + 1e-9

    def _first_reaching(self, i: int, plan: list[int]) -> int | None:
        """Smallest allowed ``r`` of group ``i`` with ``cost(plan with r at i) <= target`` (None: none does)."""
        opts = self.options[i]

        def ok(k: int) -> bool:
            plan[i] = opts[k]
            return self.cost(plan) <= self.target + 1e-9

        if not ok(len(opts) - 1):
            return None
        lo, hi = 0, len(opts) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if ok(mid):
                hi = mid
            else:
                lo = mid + 1
        return opts[lo]

    def nearest(self, i: int, r: float, lo: int | None = None, hi: int | None = None) -> int:
        """The allowed removal of group ``i`` nearest to ``r``, within ``[lo, hi]`` when given (a tie keeps more
        channels; ``lo`` when no allowed count lies inside): with ``prune.channel_multiple`` or a grouped
        convolution not every count is allowed. ``options[i]`` is ascending, so the nearest is a neighbour of ``r``."""
        opts = self.options[i]
        first = 0 if lo is None else bisect.bisect_left(opts, lo)
        end = len(opts) if hi is None else bisect.bisect_right(opts, hi)
        if first >= end:
            return int(lo if lo is not None else opts[0])
        k = bisect.bisect_left(opts, r, first, end)
        return min(opts[max(k - 1, first):min(k + 1, end)], key=lambda o: (abs(o - r), o))

    def bounds(self, i: int, ep: EpisodeState) -> tuple[int, int]:
        """``(lo, hi)`` channels group ``i`` may lose, given the earlier groups' removals (``ep.counts[:i]``)."""
        top = self.max_removed[i]
        if not self.enabled:
            return 0, top
        prefix = [int(r) for r in ep.counts[:i]]
        at_max = prefix + [0] + self.max_removed[i + 1:]
        lo = self._first_reaching(i, at_max)
        if lo is None:  # pragma: no cover - impossible: the previous step's lo kept the target reachable
            raise AssertionError(f"channel budget: group {i} cannot reach the target")
        whole = prefix + [0] * (len(self.sizes) - i)
        hi = self._first_reaching(i, whole)
        return lo, top if hi is None else max(hi, lo)

    def spread(self, i: int, ep: EpisodeState, prior: Sequence[int]) -> int:
        """Base removal of group ``i`` for the prior-relative action.

        While the episode has followed the prior exactly, the prior's own count. Otherwise the prior's counts of
        groups ``i..`` scaled by one factor ``f`` chosen (bisection) so that those groups at ``f x prior`` land
        the plan on the target: what earlier groups removed beyond (or short of) the prior is spread over all the
        remaining groups in proportion to the prior, never dumped onto the last ones.
        """
        prefix = [int(r) for r in ep.counts[:i]]
        if not self.enabled or prefix == [int(p) for p in prior[:i]]:
            return int(prior[i])
        rest = [int(p) for p in prior[i:]]
        caps = self.max_removed[i:]
        if sum(rest) <= 0:  # the prior removes nothing from here on: share by the groups' caps instead
            rest = list(caps)

        def scaled(f: float) -> list[int]:  # each group at its allowed count nearest to f x prior
            return [self.nearest(i + j, min(f * p, c)) for j, (p, c) in enumerate(zip(rest, caps, strict=True))]

        top = max((c / p for p, c in zip(rest, caps, strict=True) if p > 0), default=1.0)
        lo, hi = 0.0, max(top, 1.0)
        if self.cost(prefix + scaled(hi)) > self.target + 1e-9:
            return scaled(hi)[0]
        for _ in range(40):
            mid = (lo + hi) / 2
            if self.cost(prefix + scaled(mid)) <= self.target + 1e-9:
                hi = mid
            else:
                lo = mid
        return scaled(hi)[0]
