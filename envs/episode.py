"""What one episode of :class:`envs.PruningEnv` mutates, in one place (:class:`EpisodeState`).

The env's own attributes are fixed at construction (task, model, layer tables, budget, action map,
reward, evaluator); ``reset`` replaces the episode state with a fresh one, so nothing of an earlier
episode leaks into the next except the weights, which ``reset`` restores from the dense copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from purl.training import MaskedTrainer

__all__ = ["EpisodeState"]


@dataclass
class EpisodeState:
    """The walk's position, the per-group removed counts, the plan's cost and the running return of one episode.

    ``counts[i]``: units removed from group ``i`` (a layer's weights, or a channel group's channels: the
    granularity's unit); ``removed[i]``: the MACs layer ``i``'s pruned weights remove (weight granularity's
    bookkeeping); the plan's cost in three named units, whatever the granularity: ``weights_removed``
    (prunable Conv/Linear weights), ``macs_removed`` (Conv/Linear MACs per sample) and ``budget_removed``
    (the budget metric's amount: weights or parameters under ``params``, MACs under ``flops``); ``step``: steps taken;
    ``pass_index`` / ``layer``: the layer the next step prunes; ``done_in_pass``: summed counts of the
    layers visited in this pass; ``bounds``: the next step's ``(lo, hi)``; ``visited``: per-layer sparsity
    of the layers visited so far; ``data_seed``: seeds this episode's fine-tuning batches; ``trainer``: the
    in-episode fine-tune's :class:`purl.training.MaskedTrainer` (optimiser and batch stream; fresh each episode);
    ``oneshot_accuracy``: with ``env.terminal_proxy_steps``, the last step's one-shot accuracy (``accuracy`` is then
    the proxy's).
    """

    n_layers: int
    accuracy: float
    counts: list[int] = field(default_factory=list)
    removed: list[float] = field(default_factory=list)
    weights_removed: int = 0
    macs_removed: float = 0.0
    budget_removed: float = 0.0
    step: int = 0
    pass_index: int = 0
    layer: int = 0
    done_in_pass: int = 0
    prev_action: float = 0.0
    visited: dict[str, float] = field(default_factory=dict)
    episode_return: float = 0.0
    components: dict[str, float] = field(default_factory=dict)
    bounds: tuple[int, int] = (0, 0)
    data_seed: int = 0
    finetuned: bool = False
    trainer: MaskedTrainer | None = None
    oneshot_accuracy: float | None = None  #: with env.terminal_proxy_steps: the last step's one-shot accuracy

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * self.n_layers
        if not self.removed:
            self.removed = [0.0] * self.n_layers

    def set_count(self, i: int, k: int, removed_macs: float = 0.0) -> None:
        """Group ``i`` now has ``k`` units removed (a layer's: removing ``removed_macs`` MACs); the granularity
        updates the three costs."""
        self.counts[i] = k
        self.removed[i] = removed_macs

    def advance(self, n_layers: int) -> None:
        """Move the pointer to the next layer (and the next pass after the last layer)."""
        self.step += 1
        self.layer += 1
        if self.layer == n_layers:
            self.layer = 0
            self.pass_index += 1
            self.done_in_pass = 0

    def add_reward(self, components: dict[str, float]) -> float:
        """Add one step's reward components to the running return; return the step's reward."""
        reward = sum(components.values())
        self.episode_return += reward
        for key, value in components.items():
            self.components[key] = self.components.get(key, 0.0) + value
        return reward
