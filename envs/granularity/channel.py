"""Channel granularity: one step per Torch-Pruning channel group, a FLOPs or params budget.

An episode walks the model's channel groups (:func:`purl.pruning.channels.channel_graph`: a conv with its
BatchNorm, every branch of a residual addition, ...) in model order. Each step the action sets the fraction of
the group's channels removed (the same action modes as weights, on channel counts: ``prior-relative`` moves the
prior's count in logit space, ``sparsity-continuous`` / ``sparsity-discrete`` ask for a fraction); the request
is clipped by the channel constraints (``prune.min_channels`` kept per group, ``constraints.keep_dense``
groups, ``prune.channel_multiple`` kept counts, ``env.max_sparsity``; groups touching a layer that
``model.include``/``model.exclude`` keep out stay whole) and by AMC's action wall on the exact cost of the
plan (:mod:`envs.channel_budget`), so the episode ends with ``budget_metric`` (``env.budget_metric`` /
``prune.budget_metric``: Conv/Linear MACs or parameters) at ``1 - target_sparsity`` of the dense model's,
within one step's cost (one channel, or ``prune.channel_multiple`` channels).

The group's lowest-``prune.channel_norm`` channels (scores of the dense weights, the baselines' ranking) are
zeroed in place with :func:`purl.pruning.channels.zero_channels`: producers' filters and biases, BatchNorm
affine parameters and the consumers' input weights, which computes exactly what the physically slimmed model
computes (tested), without re-tracing a slimmed copy every step. Scores are one-shot (BatchNorm statistics
re-estimated), memoised by the removal counts, with no prefix cache (a residual group spans the network).

Not supported here (one ConfigError line each, :meth:`ChannelGranularity.check`): the ``sigma`` action (it
thresholds individual weights), ``env.finetune_steps > 0``, ``env.terminal_proxy_steps > 0`` and ``env.passes > 1``.

Extra ``info`` keys: ``channel_keep`` (channels each group keeps); the episode summary also has
``channel_keep``, ``params_ratio`` and ``flops_ratio`` (kept fractions of all parameters and of the MACs).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from purl.config import ExperimentConfig
from purl.envs.actions import ACTION_MAPS, ActionMap, PriorRelative
from purl.envs.channel_budget import ChannelBudget
from purl.envs.episode import EpisodeState
from purl.envs.granularity.base import Granularity
from purl.envs.prior import AUTO, channel_prior_removed, channel_priors, prior_candidates
from purl.errors import ConfigError, PruningError
from purl.methods import refuse_weight_threshold_at_channel
from purl.pruning.channels import ChannelGroup, channel_graph, check_slimmable, zero_channels
from purl.pruning.metrics import LayerProfile
from purl.task import Task

__all__ = ["ChannelGranularity"]


class ChannelGranularity(Granularity):
    """Output channels of each coupled channel group (``prune.granularity: channel``)."""

    name = "channel"
    unit = "group"

    def __init__(self, config: ExperimentConfig, task: Task, device: torch.device) -> None:
        super().__init__(config, task, device)
        example = torch.zeros((1, *task.data.input_shape), device=device)
        try:
            self.graph = channel_graph(self.model, example, task.channel_ignored_layers())
            check_slimmable(self.graph, masked_twin=True)  # scores come from the masked twin: it must be exact
        except PruningError as exc:
            raise ConfigError(f"prune.granularity channel: {exc}") from None
        self.groups: list[ChannelGroup] = list(self.graph.groups)
        if not self.groups:
            raise ConfigError(f"model '{config.model.name}' has no prunable channel group (only the classifier "
                              "has output channels, and they are the classes); use prune.granularity=weight")
        self.names = [g.name for g in self.groups]
        self.sizes = [g.size for g in self.groups]
        self.passes = 1
        norm = config.prune.channel_norm
        try:
            self._orders = [self.graph.removal_order(g.name, norm) for g in self.groups]
        except PruningError as exc:
            raise ConfigError(f"prune.channel_norm '{norm}': {exc}") from None
        self._dense_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.total_weights = self.graph.dense_weights
        self.dense_flops = self.graph.dense_macs
        self.dense_budget = float(self.dense_flops if self.budget_metric == "flops" else self.graph.dense_params)

    @staticmethod
    def check(config: ExperimentConfig) -> None:
        ecfg = config.env
        refuse_weight_threshold_at_channel(config)
        if "channel" not in ACTION_MAPS[ecfg.action].granularities:
            allowed = ", ".join(name for name, cls in ACTION_MAPS.items() if "channel" in cls.granularities)
            raise ConfigError(f"env.action '{ecfg.action}' thresholds individual weights; at prune.granularity "
                              f"channel use {allowed} (fractions of a group's channels)")
        if ecfg.finetune_steps:
            raise ConfigError("env.finetune_steps > 0 is not supported at prune.granularity channel (the channel env "
                              "scores each plan one-shot with BatchNorm re-estimated); set env.finetune_steps=0")
        if ecfg.passes != 1:
            raise ConfigError("env.passes > 1 is not supported at prune.granularity channel; set env.passes=1")
        if ecfg.terminal_proxy_steps:
            raise ConfigError("env.terminal_proxy_steps > 0 is not supported at prune.granularity channel (the proxy "
                              "fine-tunes a masked copy of the dense model); set env.terminal_proxy_steps=0")
        if ecfg.action == "prior-relative" and ecfg.prior not in (*channel_priors(), AUTO):
            raise ConfigError(f"env.prior '{ecfg.prior}' has no channel version; at prune.granularity channel "
                              f"allowed: {', '.join(channel_priors())}, {AUTO}")
        if ecfg.action == "prior-relative" and ecfg.prior == AUTO:
            prior_candidates(config)  # at least one candidate with a channel version

    def _options(self, config: ExperimentConfig) -> list[list[int]]:
        """Channel counts each group may lose: the baselines' channel constraints (``prune.min_channels``,
        ``constraints.keep_dense``, ``prune.channel_multiple``) within the action range (``env.max_sparsity``)."""
        from purl.baselines.channel import ChannelConstraints

        constraints = ChannelConstraints.from_config(config)
        options = []
        for g in self.groups:
            top = math.floor(config.env.max_sparsity * g.size + 1e-9)
            options.append([0, *(r for r in constraints.removals(g) if r <= top)])
        return options

    def build_budget(self, config: ExperimentConfig) -> None:
        self.budget = ChannelBudget(self.graph, self._options(config), config.env.target_sparsity,
                                    self.budget_metric, enabled=config.env.budget)

    def build_prior(self, config: ExperimentConfig, action_map: ActionMap) -> None:
        self.config = config
        if isinstance(action_map, PriorRelative):
            # check: env.budget_metric, when set, is prune.budget_metric, which the plan uses
            self.prior = channel_prior_removed(config.env.prior, self.graph, config, self.budget.max_removed)

    def _group_weights(self, group: ChannelGroup) -> int:
        layers = self.graph.layers
        return sum(layers[n].weight for n in (*group.producers, *group.consumers) if n in layers)

    def profiles(self) -> list[LayerProfile]:
        """One observation row per group: its first producer's layer facts, the group's weights and MACs."""
        rows = []
        for g in self.groups:
            first = g.producers[0] if g.producers else g.name
            weights = self._group_weights(g)
            profile = self.task.profiles.get(first)
            if profile is None:
                layer = self.graph.layers.get(first)
                profile = LayerProfile(g.name, "conv", layer.in_dim if layer else g.size, g.size, 1, 1, 1, weights,
                                       g.macs)
            rows.append(dataclasses.replace(profile, name=g.name, numel=weights, macs=g.macs))
        return rows

    def step_shares(self) -> list[float]:
        """Each group's dense MACs (``flops``) or the weights of its layers (``params``)."""
        return [float(g.macs) if self.budget_metric == "flops" else float(self._group_weights(g))
                for g in self.groups]

    def request(self, action_map: ActionMap, action: Any, ep: EpisodeState, i: int,
                base: int | None) -> tuple[float, int]:
        return action_map.requested_count(action, self.sizes[i], base)

    def snap(self, i: int, k: int, lo: int, hi: int) -> int:
        """The allowed removal nearest to ``k`` (``prune.channel_multiple``, grouped convolutions)."""
        return self.budget.nearest(i, k, lo, hi)

    def keep_plan(self, removed: list[int]) -> dict[str, int]:
        """Channels each group keeps when ``removed[i]`` channels are gone from group ``i``."""
        return {name: size - int(r) for name, size, r in zip(self.names, self.sizes, removed, strict=True)}

    def apply(self, ep: EpisodeState, i: int, k: int) -> None:
        if k:
            zero_channels(self.graph, self.names[i], self._orders[i][:k])
        ep.set_count(i, k)
        ep.done_in_pass += k
        keep = self.keep_plan(ep.counts)
        ep.macs_removed = float(self.dense_flops - self.graph.macs(keep))
        ep.weights_removed = self.total_weights - self.graph.weights(keep)
        ep.budget_removed = (ep.macs_removed if self.budget_metric == "flops"
                             else float(self.graph.dense_params - self.graph.params(keep)))

    def restore(self) -> None:
        self.model.load_state_dict(self._dense_state)

    def flops_rest(self, ep: EpisodeState, i: int) -> float:
        """The dense MACs of the groups after ``i``."""
        return float(sum(g.macs for g in self.groups[i + 1:]))

    def step_info(self, ep: EpisodeState) -> dict[str, Any]:
        return {"channel_keep": self.keep_plan(ep.counts)}

    def episode_info(self, ep: EpisodeState) -> dict[str, Any]:
        keep = self.keep_plan(ep.counts)
        return {"channel_keep": keep, "params_ratio": self.graph.params(keep) / self.graph.dense_params,
                "flops_ratio": (self.dense_flops - ep.macs_removed) / self.dense_flops}
