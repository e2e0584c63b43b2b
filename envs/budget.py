"""Per-step bounds on a layer's pruned count: the shared constraints plus AMC's "action wall".

Every step the agent's requested count for layer ``i`` is clipped to ``[lo, hi]``:

* always: ``counts[i] <= hi <= max_removed[i]`` from :class:`purl.pruning.constraints.Constraints`
  (Minimum Threshold floor, ``keep_dense``, ``max_sparsity``), from the action range
  (``floor(env.max_sparsity x n)``: the wall never forces a layer further than the agent could
  ask) and from the no-collapse floor (``env.min_layer_weights``, default one weight per output
  channel/feature, so no action and no budget path disconnects a layer), and a layer never loses
  pruned weights (``lo >= counts[i]``; with ``passes > 1`` later
  passes can only prune more, so no pruned weight is ever resurrected);
* with the budget on (``env.budget``, default), let ``T = round(target_sparsity x total)``:

  - **never overshoot**: ``hi <= T - (pruned weights of all other layers)``;
  - **action wall, final pass only**: ``lo >= T - (pruned in this pass so far) - sum(max_removed of
    the later layers)``, so the remaining layers can still reach ``T`` at their own maxima.
    On earlier passes only the no-overshoot bound applies (the final pass can always catch up,
    since the counts then are at most ``T`` and the maxima sum to at least ``T``).

  On the last layer of the final pass ``lo == hi``: it takes exactly what is left, and the
  episode ends at exactly ``T`` pruned weights.

Feasibility (``T <= sum(max_removed)``) is checked once at construction; the error names the
largest feasible global sparsity.
"""

from __future__ import annotations

from collections.abc import Sequence

from purl.config import ConstraintsConfig
from purl.envs.episode import EpisodeState
from purl.envs.target import meets_target, target_count
from purl.errors import ConfigError, PruningError
from purl.pruning import PrunableLayer
from purl.pruning.constraints import Constraints, floor_count


class Budget:
    """Bounds on the pruned count of each layer, given the episode so far.

    The three walls (this one, :class:`envs.flops_budget.FlopsBudget` and
    :class:`envs.channel_budget.ChannelBudget`) share one interface: ``bounds(i, ep)``, ``spread(i, ep, prior)``,
    ``reaches(ep)`` and ``max_removed`` (each group's largest removal), on an
    :class:`envs.episode.EpisodeState`.
    """

    def __init__(
        self,
        numels: Sequence[int],
        max_removed: Sequence[int],
        target_sparsity: float,
        *,
        enabled: bool = True,
        names: Sequence[str] | None = None,
        passes: int = 1,
    ) -> None:
        self.numels = [int(n) for n in numels]
        self.max_removed = [int(min(max(m, 0), n)) for m, n in zip(max_removed, self.numels, strict=True)]
        self.total = sum(self.numels)
        self.enabled = bool(enabled)
        self.passes = int(passes)
        self.target_sparsity = float(target_sparsity)
        self.target_count = target_count(self.target_sparsity, self.total)  # the one rule: envs.target
        # suffix_max[i] = sum of max_removed[i:]
        self.suffix_max = [0] * (len(self.numels) + 1)
        for i in range(len(self.numels) - 1, -1, -1):
            self.suffix_max[i] = self.suffix_max[i + 1] + self.max_removed[i]
        self.max_feasible = self.suffix_max[0] / self.total if self.total else 0.0
        if self.enabled and self.target_count > self.suffix_max[0]:
            capped = [
                f"{name} <= {m / n:.4f}"
                for name, m, n in zip(names or [str(i) for i in range(len(self.numels))], self.max_removed,
                                      self.numels, strict=True)
                if m < n
            ]
            detail = f" (per-layer caps: {', '.join(capped[:8])}{', ...' if len(capped) > 8 else ''})" if capped else ""
            raise ConfigError(
                f"env.target_sparsity={self.target_sparsity} is infeasible under the constraints{detail}; "
                f"the maximum feasible global sparsity is {self.max_feasible:.6f} "
                f"({self.suffix_max[0]} of {self.total} prunable weights)"
            )

    def reaches(self, ep: EpisodeState) -> bool:
        """Whether the episode's pruned weights are at the target (:func:`envs.target.meets_target`)."""
        return meets_target(ep.weights_removed, self.total, self.target_sparsity)

    def bounds(self, i: int, ep: EpisodeState) -> tuple[int, int]:
        """``(lo, hi)`` for layer ``i`` given the episode so far: its current count, the pruned count of all
        layers (``ep.weights_removed``), the summed counts of the layers visited in this pass
        (``ep.done_in_pass``) and whether this is the final pass."""
        current = ep.counts[i]
        lo, hi = current, self.max_removed[i]
        if self.enabled:
            hi = min(hi, self.target_count - (ep.weights_removed - current))
            if ep.pass_index >= self.passes - 1:
                lo = max(lo, self.target_count - ep.done_in_pass - self.suffix_max[i + 1])
        if hi < lo:  # pragma: no cover - impossible by construction (see module docstring)
            raise AssertionError(f"budget bounds crossed on layer {i}: lo={lo} > hi={hi}")
        return lo, hi

    def spread(self, i: int, ep: EpisodeState, prior: Sequence[int]) -> int:
        """Base count of layer ``i`` for the prior-relative action: the prior's count, rescaled so that
        the layers from ``i`` on, at their prior proportions, prune exactly what the target still needs.

        What earlier layers pruned beyond (or short of) their prior is thus spread over all the remaining
        layers in proportion to their prior counts, never dumped onto the last ones. Without a budget the
        base is the prior's count.
        """
        if not self.enabled:
            return int(prior[i])
        need = self.target_count - ep.done_in_pass
        rest = sum(int(p) for p in prior[i:])
        if need == rest:
            return int(prior[i])
        if rest <= 0:  # the prior prunes nothing from here on: share by the layers' caps instead
            room = self.suffix_max[i]
            return int(round(self.max_removed[i] * need / room)) if room else 0
        return int(round(prior[i] * need / rest))


def default_floor(layer: PrunableLayer, min_layer_weights: str | int) -> int:
    """Weights ``layer`` keeps at least under any action: one per output channel/feature (``"outputs"``),
    or the given count; never more than the layer has."""
    keep = int(layer.weight.shape[0]) if min_layer_weights == "outputs" else int(min_layer_weights)
    return min(max(keep, 0), layer.numel)


def layer_caps(
    cfg: ConstraintsConfig,
    layers: Sequence[PrunableLayer],
    action_max: float = 1.0,
    min_layer_weights: str | int = 0,
) -> list[int]:
    """Largest pruned count of each layer: the shared constraints (``config.constraints``: Minimum
    Threshold, keep_dense, max_sparsity), no more than the agent itself could ask for
    (``floor(action_max x n)``, i.e. ``env.max_sparsity``), and the no-collapse floor
    (:func:`default_floor`, ``env.min_layer_weights``).

    The second cap keeps the action wall from forcing a layer beyond the action range; the floor keeps
    every layer, the output layer included, connected whatever the policy does, also without MT.
    """
    try:
        caps = Constraints.from_config(cfg).max_pruned(layers)
    except PruningError as exc:  # e.g. a keep_dense pattern that matches no layer
        raise ConfigError(f"constraints: {exc}") from None
    return [min(int(caps[layer.name]), floor_count(action_max, layer.numel),
                layer.numel - default_floor(layer, min_layer_weights)) for layer in layers]
