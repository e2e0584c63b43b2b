"""Weight granularity: one step per prunable layer, its smallest-magnitude weights masked to an exact count.

The layer is pruned by magnitude to the exact count (:class:`~purl.pruning.MaskState`); without fine-tuning,
first-pass masks come from a per-layer stable magnitude ranking of the dense weights (int32, computed on first
use), identical to :func:`~purl.pruning.magnitude_mask`. The budget is :class:`envs.budget.Budget` (prunable
weights) or, under ``prune.budget_metric: flops``, :class:`envs.flops_budget.FlopsBudget` (a layer's MACs scale
with its kept weights). ``env.passes > 1`` walks the layers again; ``env.finetune_steps`` fine-tunes in the
episode with the masks kept (:class:`purl.training.MaskedTrainer`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import torch

from purl.config import ExperimentConfig
from purl.envs.actions import ActionMap, PriorRelative, SigmaThreshold
from purl.envs.budget import Budget, layer_caps
from purl.envs.episode import EpisodeState
from purl.envs.flops_budget import FlopsBudget, check_flops_env_config
from purl.envs.granularity.base import Granularity
from purl.envs.prior import flops_prior_counts, prior_counts
from purl.errors import PurlError
from purl.evaluator import RewardEvaluator
from purl.proxy import short_finetune
from purl.pruning import MaskState, find_prunable_layers, magnitude_mask
from purl.pruning.constraints import Constraints
from purl.pruning.metrics import LayerProfile
from purl.runtime import preserved_rng
from purl.task import Task
from purl.training import MaskedTrainer, momentum_sgd

__all__ = ["WeightGranularity"]


class WeightGranularity(Granularity):
    """Individual weights of each prunable Conv/Linear layer (``prune.granularity: weight``)."""

    name = "weight"
    unit = "layer"

    def __init__(self, config: ExperimentConfig, task: Task, device: torch.device) -> None:
        super().__init__(config, task, device)
        self.layers = find_prunable_layers(self.model, config.model.include, config.model.exclude)
        self.masks = MaskState(self.model, self.layers)
        self.names = [layer.name for layer in self.layers]
        self.weights = [layer.weight for layer in self.layers]
        missing = [name for name in self.names if name not in task.profiles]
        if missing:
            raise PurlError(f"no layer profile for prunable layer(s) {missing}; was the task built for this model?")
        profiles = [task.profiles[name] for name in self.names]
        self.passes = config.env.passes
        self.sizes = [p.numel for p in profiles]
        self.macs = [float(p.macs) for p in profiles]
        self.total_weights = sum(self.sizes)
        self.dense_flops = int(sum(p.macs for p in task.profiles.values()))
        self.dense_budget = float(self.dense_flops if self.budget_metric == "flops" else self.total_weights)
        self._suffix_macs = [0.0] * (len(self.names) + 1)
        for i in range(len(self.names) - 1, -1, -1):
            self._suffix_macs[i] = self._suffix_macs[i + 1] + self.macs[i]
        # magnitude ranks of the dense weights (int32, lazily per layer): with no fine-tuning every
        # first-pass mask is one comparison ``rank >= k`` instead of a kthvalue selection
        self._ranks: list[torch.Tensor | None] | None = [None] * len(self.names) if not config.env.finetune_steps \
            else None

    @staticmethod
    def check(config: ExperimentConfig) -> None:
        check_flops_env_config(config)

    def build_budget(self, config: ExperimentConfig) -> None:
        ecfg = config.env
        caps = layer_caps(config.constraints, self.layers, ecfg.max_sparsity, ecfg.min_layer_weights)
        self.budget: Budget | FlopsBudget
        if self.budget_metric == "flops":  # remove target x the dense MACs (envs/flops_budget.py)
            self.budget = FlopsBudget(self.sizes, self.macs, caps, ecfg.target_sparsity, self.dense_flops,
                                      enabled=ecfg.budget)
        else:
            self.budget = Budget(self.sizes, caps, ecfg.target_sparsity, enabled=ecfg.budget, names=self.names,
                                 passes=self.passes)

    def build_prior(self, config: ExperimentConfig, action_map: ActionMap) -> None:
        self.config = config
        ecfg = config.env
        if isinstance(action_map, PriorRelative):
            constraints = Constraints.from_config(config.constraints, min_threshold=ecfg.prior_min_threshold)
            if isinstance(self.budget, FlopsBudget):
                self.prior = flops_prior_counts(ecfg.prior, self.layers, ecfg.target_sparsity, constraints,
                                                self.budget.max_removed, self.task.profiles)
            else:
                self.prior = prior_counts(ecfg.prior, self.layers, ecfg.target_sparsity, constraints,
                                          self.budget.max_removed, self.budget.target_count)
        if isinstance(action_map, SigmaThreshold):
            action_map.precompute(self.weights)

    def profiles(self) -> list[LayerProfile]:
        return [self.task.profiles[name] for name in self.names]

    def step_shares(self) -> list[float]:
        return list(self.macs) if self.budget_metric == "flops" else [float(n) for n in self.sizes]

    def scoring_options(self, config: ExperimentConfig) -> tuple[bool, float]:
        """Memoised by counts and with a prefix cache only while nothing is fine-tuned (then a layer's pruned
        count determines its weights)."""
        fixed_weights = config.env.finetune_steps == 0
        return (bool(config.env.cache_evaluations and fixed_weights),
                config.env.activation_cache_mb if fixed_weights else 0.0)

    def request(self, action_map: ActionMap, action: Any, ep: EpisodeState, i: int,
                base: int | None) -> tuple[float, int]:
        return action_map.requested(action, self.weights[i], i, self._dense_weights(ep), base=base)

    def _dense_weights(self, ep: EpisodeState) -> bool:
        """Whether layer weights are still the dense model's (first pass, nothing fine-tuned)."""
        return ep.pass_index == 0 and not ep.finetuned

    def apply(self, ep: EpisodeState, i: int, k: int) -> None:
        if k != ep.counts[i]:
            mask = (self._dense_mask(i, k) if self._dense_weights(ep) and self._ranks is not None
                    else magnitude_mask(self.weights[i], k))
            self.masks.set_mask(self.names[i], mask)
            ep.weights_removed += k - ep.counts[i]
            ep.macs_removed += self.macs[i] * k / self.sizes[i] - ep.removed[i]
            ep.set_count(i, k, self.macs[i] * k / self.sizes[i])
            ep.budget_removed = ep.macs_removed if self.budget_metric == "flops" else float(ep.weights_removed)
        ep.done_in_pass += k

    def restore(self) -> None:
        self.masks.restore()

    def accuracy(self, evaluator: RewardEvaluator, ep: EpisodeState, i: int) -> float:
        """With the prefix cache: keep the activations in front of the next layer for the next step."""
        return evaluator.accuracy(ep.counts, next_layer=i + 1 if i + 1 < len(self.names) else None)

    def flops_rest(self, ep: EpisodeState, i: int) -> float:
        rest = self._suffix_macs[i + 1]
        if ep.pass_index > 0:  # later layers may already be pruned (passes > 1, or the terminal state)
            rest -= sum(ep.removed[i + 1:])
        return rest

    @torch.no_grad()
    def _dense_mask(self, i: int, k: int) -> torch.Tensor:
        """Keep-mask pruning the ``k`` smallest dense weights of layer ``i``: identical to
        ``magnitude_mask`` (a stable sort breaks ties by flat index), at the cost of one comparison."""
        assert self._ranks is not None
        rank = self._ranks[i]
        if rank is None:
            weight = self.weights[i].detach()
            order = torch.sort(weight.reshape(-1).abs().float(), stable=True).indices
            rank = torch.empty(weight.numel(), dtype=torch.int32, device=weight.device)
            rank[order] = torch.arange(weight.numel(), dtype=torch.int32, device=weight.device)
            rank = self._ranks[i] = rank.view(weight.shape)
        return rank >= k

    # ------------------------------------------------------------------ in-episode fine-tuning
    def _train_batches(self, data_seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This episode's endless train-split batches: epoch ``e`` shuffled with seed ``data_seed + e``."""
        for epoch in itertools.count():
            loader = self.task.data.loader("train", self.config.data.batch_size, seed=data_seed + epoch,
                                           drop_last=False)
            for x, y in loader:
                yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def finetune(self, ep: EpisodeState, steps: int) -> None:
        """``steps`` steps of the episode's :class:`purl.training.MaskedTrainer` (masks kept).

        The trainer lives for the episode: its optimiser (SGD, momentum 0.9, ``env.finetune_lr``) and batch
        stream carry over from one layer's fine-tune to the next; each call is seeded by the episode and step.
        """
        model = self.model
        if ep.trainer is None:
            ep.trainer = MaskedTrainer(model, momentum_sgd(model, self.config.env.finetune_lr),
                                       self._train_batches(ep.data_seed), device=self.device, masks=self.masks)
        cuda = self.device.type == "cuda"
        index = (self.device.index or 0) if cuda else None
        seed = ep.data_seed + 7919 * ep.step
        with torch.random.fork_rng(devices=[index] if cuda else []):
            torch.default_generator.manual_seed(seed)  # augmentation / dropout of this step
            if cuda:
                torch.cuda.default_generators[index].manual_seed(seed)
            try:
                ep.trainer.steps(steps)
            finally:
                model.eval()
        ep.finetuned = True

    def proxy_accuracy(self, ep: EpisodeState, *, steps: int, seed: int, val_samples: int | None) -> float:
        """The allocation's short-fine-tune proxy (:func:`purl.proxy.short_finetune`): a fresh copy of the dense
        model under the env's current masks, ``steps`` masked SGD steps, BatchNorm re-estimated, reward split.

        The same score the agent's selection re-ranks with, on the same kind of model (dense weights, the plan's
        masks), so the env's terminal signal and the final re-ranking agree on what they measure. The callers'
        random streams are left as they were (:func:`purl.runtime.preserved_rng`).
        """
        model, masks = self.task.fresh_copy()
        for name in self.names:
            masks.set_mask(name, self.masks.masks[name])  # a private copy (set_mask copies)
        with preserved_rng():
            score = short_finetune(self.task, model, masks, steps=steps, seed=seed, val_samples=val_samples)
        return score.top1
