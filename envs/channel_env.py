"""PuRL's pruning MDP at channel granularity: one step per Torch-Pruning channel group, a FLOPs or params budget.

Selected by ``prune.granularity: channel`` (:func:`envs.factory.env_class`). An episode walks the model's
channel groups (:func:`purl.pruning.channels.channel_graph`: a conv with its BatchNorm, every branch of a
residual addition, ...) in model order. Each step the action sets the fraction of the group's channels
removed (the same action modes as the weight env, on channel counts: ``prior-relative`` moves the prior's
count in logit space, ``sparsity-continuous`` / ``sparsity-discrete`` ask for a fraction); the request is
clipped by the channel constraints (``prune.min_channels`` kept per group, ``constraints.keep_dense``
groups, ``prune.channel_multiple`` kept counts, ``env.max_sparsity``; groups touching a layer that
``model.include``/``model.exclude`` keep out stay whole) and by AMC's action wall on the exact cost of the
plan (:mod:`envs.channel_budget`), so the episode ends with ``budget_metric`` (``env.budget_metric`` /
``prune.budget_metric``: Conv/Linear MACs or parameters) at ``1 - target_sparsity`` of the dense model's,
within one step's cost (one channel, or ``prune.channel_multiple`` channels).

The group's lowest-``prune.channel_norm`` channels (scores of the dense weights, the baselines' ranking) are
zeroed in place in the env's own model with :func:`purl.pruning.channels.zero_channels`: producers' filters
and biases, BatchNorm affine parameters and the consumers' input weights, which computes exactly what the
physically slimmed model computes (tested), without re-tracing a slimmed copy every step. The accuracy on the
reward-validation split (BatchNorm statistics re-estimated, ``env.bn_recalibration_batches``; memoised by the
removal counts) gives a reward at every step through the same reward registry as the weight env, where
"sparsity" means the fraction of the budget metric removed. ``reset`` restores the dense weights.

Not supported here (one ConfigError line each, :func:`check_channel_env_config`): the ``sigma`` action (it
thresholds individual weights), ``env.finetune_steps > 0`` and ``env.passes > 1``.

``info`` keys: those of :class:`envs.PruningEnv` (``layer`` is the group's name, ``layer_sparsities`` the
removed fraction of each visited group's channels, ``global_sparsity`` the removed fraction of the budget
metric, ``flops`` the plan's Conv/Linear MACs), plus ``budget_metric`` and ``channel_keep`` (channels each
group keeps). The episode summary also has ``channel_keep``, ``params_ratio`` and ``flops_ratio`` (kept).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from purl.config import ExperimentConfig
from purl.envs.actions import PriorRelative, SigmaThreshold, make_action_map
from purl.envs.channel_budget import ChannelBudget
from purl.envs.config import resolve_config
from purl.envs.episode import EpisodeState
from purl.envs.observation import ObservationBuilder, observation_space
from purl.envs.prior import AUTO, channel_prior_removed, channel_priors, prior_candidates, resolve_prior
from purl.envs.resume import ResumableEnv
from purl.envs.rewards import RewardContext, call_reward, make_reward, reset_reward
from purl.envs.setup import RENDER_MODES, allocation_image, check_render_mode, device_and_task, reward_scoring
from purl.errors import ConfigError, PruningError, PurlError
from purl.pruning.channels import ChannelGroup, channel_graph, check_slimmable, zero_channels
from purl.pruning.metrics import LayerProfile
from purl.task import Task

__all__ = ["ChannelPruningEnv", "check_channel_env_config"]


def check_channel_env_config(config: ExperimentConfig) -> None:
    """What the channel env cannot do, as one ConfigError line (checked before any work)."""
    ecfg = config.env
    if isinstance(make_action_map(ecfg), SigmaThreshold):
        raise ConfigError("env.action 'sigma' thresholds individual weights; at prune.granularity channel use "
                          "prior-relative, sparsity-continuous or sparsity-discrete (fractions of a group's channels)")
    if ecfg.finetune_steps:
        raise ConfigError("env.finetune_steps > 0 is not supported at prune.granularity channel (the channel env "
                          "scores each plan one-shot with BatchNorm re-estimated); set env.finetune_steps=0")
    if ecfg.passes != 1:
        raise ConfigError("env.passes > 1 is not supported at prune.granularity channel; set env.passes=1")
    if ecfg.action == "prior-relative" and ecfg.prior not in (*channel_priors(), AUTO):
        raise ConfigError(f"env.prior '{ecfg.prior}' has no channel version; at prune.granularity channel allowed: "
                          f"{', '.join(channel_priors())}, {AUTO}")
    if ecfg.action == "prior-relative" and ecfg.prior == AUTO:
        prior_candidates(config)  # at least one candidate with a channel version


class ChannelPruningEnv(ResumableEnv, gym.Env):
    """Remove channels group by group; a reward at every step; ends on the FLOPs/params budget.

    Same arguments as :class:`envs.PruningEnv`: ``config`` (object, YAML path or None), ``task``, ``device``,
    ``overrides`` (``key.sub=value``), ``render_mode`` (None, ``"ansi"`` or ``"rgb_array"``), ``**env_overrides``
    (:class:`~purl.config.EnvConfig` fields). ``prune.granularity`` is set to ``channel`` when it is not.
    """

    metadata = {"render_modes": list(RENDER_MODES), "render_fps": 4}

    def __init__(
        self,
        config: ExperimentConfig | str | Path | None = None,
        *,
        task: Task | None = None,
        device: str | torch.device | None = None,
        overrides: list[str] | None = None,
        render_mode: str | None = None,
        **env_overrides: Any,
    ) -> None:
        super().__init__()
        config = resolve_config(config, task, overrides, env_overrides)
        if config.prune.granularity != "channel":
            config = config.model_copy(update={"prune": config.prune.model_copy(update={"granularity": "channel"})})
        check_channel_env_config(config)
        self.config = config
        self.render_mode = check_render_mode(render_mode, self.metadata["render_modes"])
        self.device, self.task = device_and_task(self.config, task, device)
        self._build_graph()
        self._build_rules()
        self._build_evaluator()
        self._obs = ObservationBuilder(self._profiles(), self.graph.dense_macs, passes=1,
                                       target_sparsity=self.target_sparsity, target_accuracy=self.target_accuracy)
        self._dirty = False
        self._ready = False
        self._ep = self._new_episode()

    # ------------------------------------------------------------------ construction
    def _build_graph(self) -> None:
        """The env's own model, its channel graph, each group's removal order (dense scores)."""
        self.model = copy.deepcopy(self.task.model).to(self.device)
        self.model.eval()
        example = torch.zeros((1, *self.task.data.input_shape), device=self.device)
        try:
            self.graph = channel_graph(self.model, example, self.task.channel_ignored_layers())
            check_slimmable(self.graph, masked_twin=True)  # scores come from the masked twin: it must be exact
        except PruningError as exc:
            raise ConfigError(f"prune.granularity channel: {exc}") from None
        self.groups: list[ChannelGroup] = list(self.graph.groups)
        if not self.groups:
            raise ConfigError(f"model '{self.config.model.name}' has no prunable channel group (only the classifier "
                              "has output channels, and they are the classes); use prune.granularity=weight")
        self.layer_names = [g.name for g in self.groups]
        self.sizes = [g.size for g in self.groups]
        self.n_layers = self.n_steps = len(self.groups)
        self.passes = 1
        norm = self.config.prune.channel_norm
        try:
            self._orders = [self.graph.removal_order(g.name, norm) for g in self.groups]
        except PruningError as exc:
            raise ConfigError(f"prune.channel_norm '{norm}': {exc}") from None
        self._dense_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def _options(self) -> list[list[int]]:
        """Channel counts each group may lose: the baselines' channel constraints (``prune.min_channels``,
        ``constraints.keep_dense``, ``prune.channel_multiple``) within the action range (``env.max_sparsity``)."""
        from purl.baselines.channel import ChannelConstraints

        prune = self.config.prune
        constraints = ChannelConstraints(min_channels=prune.min_channels, multiple=prune.channel_multiple,
                                         keep_dense=tuple(self.config.constraints.keep_dense))
        options = []
        for g in self.groups:
            top = math.floor(self.config.env.max_sparsity * g.size + 1e-9)
            options.append([0, *(r for r in constraints.removals(g) if r <= top)])
        return options

    def _build_rules(self) -> None:
        """Budget (the wall), action map (with the prior) and reward."""
        ecfg = self.config.env
        self.budget_metric = self.config.budget_metric()
        self.target_sparsity = ecfg.target_sparsity
        self.budget = ChannelBudget(self.graph, self._options(), ecfg.target_sparsity, self.budget_metric,
                                    enabled=ecfg.budget)
        self.action_map = make_action_map(ecfg)
        self.prior: list[int] | None = None
        # env.prior 'auto' -> the best channel baseline by the re-ranking proxy (envs/prior.py; memoised on the
        # task), once the budget has checked the target is feasible
        self.config, self.prior_choice = resolve_prior(self.task, self.config, self.config.seed)
        ecfg = self.config.env
        if isinstance(self.action_map, PriorRelative):
            # check_channel_env_config: env.budget_metric, when set, is prune.budget_metric, which the plan uses
            self.prior = channel_prior_removed(ecfg.prior, self.graph, self.config, self.budget.max_removed)
        self.action_space = self.action_map.space
        self.observation_space = observation_space()
        self.reward_fn = make_reward(ecfg.reward, ecfg.reward_kwargs)
        # visited share of the budget, for the reward's on-track schedule: each group's dense cost
        share = [float(g.macs) if self.budget_metric == "flops" else float(self._group_weights(g))
                 for g in self.groups]
        total = sum(share) or 1.0
        self._visited = [sum(share[:t]) / total for t in range(self.n_steps + 1)]

    def _group_weights(self, group: ChannelGroup) -> int:
        layers = self.graph.layers
        return sum(layers[n].weight for n in (*group.producers, *group.consumers) if n in layers)

    def _build_evaluator(self) -> None:
        # no prefix cache: a residual group spans the whole network
        scoring = reward_scoring(self.config, self.task, self.device, self.model, self.layer_names,
                                 memoize=bool(self.config.env.cache_evaluations), prefix_cache_mb=0.0)
        self.evaluator, self.bn_recalibration_batches = scoring.evaluator, scoring.bn_recalibration_batches
        self.dense_accuracy, self.target_accuracy = scoring.dense_accuracy, scoring.target_accuracy

    def _profiles(self) -> list[LayerProfile]:
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

    @property
    def evaluations(self) -> int:
        """Real (not memoised) evaluations of the pruned network so far in this env."""
        return self.evaluator.evaluations

    # ------------------------------------------------------------------ episode
    def _new_episode(self, data_seed: int = 0) -> EpisodeState:
        ep = EpisodeState(self.n_layers, accuracy=self.dense_accuracy, data_seed=data_seed)
        ep.bounds = self.budget.bounds(0, ep.counts)
        self._flops = self.graph.dense_macs  # MACs of the plan so far, counted once per step
        return ep

    def keep_plan(self, removed: list[int] | None = None) -> dict[str, int]:
        """Channels each group keeps under ``removed`` (default: the current episode's counts)."""
        removed = self._ep.counts if removed is None else removed
        return {name: size - int(r) for name, size, r in zip(self.layer_names, self.sizes, removed, strict=True)}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if self._dirty:
            self.model.load_state_dict(self._dense_state)
            self._dirty = False
        self._ep = self._new_episode(self._episode_seed(options))  # options: see envs.resume
        self._ready = True
        reset_reward(self.reward_fn, self._context(terminal=False, layer_index=-1, applied=0.0, requested=0.0))
        info = {"layer": self.layer_names[0], "accuracy": self.dense_accuracy, "dense_accuracy": self.dense_accuracy,
                "global_sparsity": 0.0, "flops": self.graph.dense_macs, "dense_flops": self.graph.dense_macs,
                "layer_sparsities": {}, "evaluations": self.evaluator.evaluations,
                "target_sparsity": self.target_sparsity, "target_accuracy": self.target_accuracy,
                "budget_metric": self.budget_metric}
        return self._observe(), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if not self._ready:
            raise PurlError("step() called before reset() or after the episode ended; call reset() first")
        ep = self._ep
        i = ep.layer
        lo, hi = ep.bounds
        base = None
        if self.prior is not None:
            spread = self.budget.spread(i, ep.counts, self.prior)
            base = lo if spread < lo else hi if spread > hi else spread
        requested, r = self.action_map.requested_count(action, self.sizes[i], base)
        r = self.budget.nearest(i, lo if r < lo else hi if r > hi else r, lo, hi)  # an allowed count (channel_multiple)
        if r:
            zero_channels(self.graph, self.layer_names[i], self._orders[i][:r])
            self._dirty = True
        ep.set_count(i, r, 0.0)
        ep.done_in_pass += r
        keep = self.keep_plan()
        self._flops = self.graph.macs(keep)
        cost = self._flops if self.budget_metric == "flops" else self.graph.params(keep)
        ep.total_removed = float(self.budget.dense - cost)
        applied = r / self.sizes[i]
        ep.visited[self.layer_names[i]] = applied
        ep.accuracy = self.evaluator.accuracy(ep.counts)
        ep.advance(self.n_layers)
        terminal = ep.step == self.n_steps
        components = call_reward(self.reward_fn, self._context(terminal=terminal, layer_index=i, applied=applied,
                                                               requested=requested))
        reward = ep.add_reward(components)
        ep.prev_action = applied
        if not terminal:
            ep.bounds = self.budget.bounds(ep.layer, ep.counts)
        info = self._step_info(i, requested, applied, components)
        if terminal:
            self._ready = False
            info["purl_episode"] = self._episode_summary(info)
        return self._observe(), float(reward), terminal, False, info

    def _sparsity(self) -> float:
        return self._ep.total_removed / self.budget.dense if self.budget.dense else 0.0

    def _macs(self) -> int:
        return self._flops

    def _step_info(self, i: int, requested: float, applied: float, components: dict[str, float]) -> dict[str, Any]:
        ep = self._ep
        return {"layer": self.layer_names[i], "layer_index": i, "pass": 0, "requested_sparsity": requested,
                "applied_sparsity": applied, "layer_sparsities": dict(ep.visited), "accuracy": ep.accuracy,
                "global_sparsity": self._sparsity(), "flops": self._macs(), "dense_flops": self.graph.dense_macs,
                "reward_components": components, "evaluations": self.evaluator.evaluations,
                "target_sparsity": self.target_sparsity, "target_accuracy": self.target_accuracy,
                "budget_metric": self.budget_metric, "channel_keep": self.keep_plan()}

    def _episode_summary(self, info: dict[str, Any]) -> dict[str, Any]:
        ep = self._ep
        reaches = self.budget.reaches(self.budget.dense - ep.total_removed)
        keep = self.keep_plan()
        return {"return": ep.episode_return, "components": dict(ep.components), "accuracy": ep.accuracy,
                "global_sparsity": info["global_sparsity"], "flops": info["flops"],
                "layer_sparsities": {n: r / s for n, r, s in zip(self.layer_names, ep.counts, self.sizes, strict=True)},
                "channel_keep": keep, "params_ratio": self.graph.params(keep) / self.graph.dense_params,
                "flops_ratio": info["flops"] / self.graph.dense_macs, "budget_metric": self.budget_metric,
                "reaches_target": reaches, "meets_target": bool(reaches and ep.accuracy >= self.target_accuracy),
                "length": ep.step, "dense_accuracy": self.dense_accuracy, "target_sparsity": self.target_sparsity,
                "target_accuracy": self.target_accuracy}

    def render(self) -> str | np.ndarray | None:
        """``ansi``: one line of text; ``rgb_array``: the allocation so far as an HxWx3 uint8 image (one bar per
        channel group at its sparsity, the next one to prune in another colour:
        :func:`purl.envs.setup.allocation_image`)."""
        ep = self._ep
        if self.render_mode == "rgb_array":
            sparsities = [c / n if n else 0.0 for c, n in zip(ep.counts, self.sizes, strict=True)]
            return allocation_image(sparsities, ep.layer if self._ready else None)
        if self.render_mode != "ansi":
            return None
        where = (f"group {self.layer_names[ep.layer]} ({ep.layer + 1}/{self.n_layers})" if self._ready
                 else "episode over")
        return (f"step {ep.step}/{self.n_steps} {where}: accuracy {ep.accuracy:.4f} (target "
                f"{self.target_accuracy:.4f}), {self.budget_metric} removed {self._sparsity():.4f} "
                f"(target {self.target_sparsity:.4f})\n")

    # ------------------------------------------------------------------ helpers
    def _context(self, *, terminal: bool, layer_index: int, applied: float, requested: float) -> RewardContext:
        ep = self._ep
        removed = int(round(ep.total_removed))
        return RewardContext(
            step=ep.step, n_steps=self.n_steps, terminal=terminal,
            layer=self.layer_names[layer_index] if layer_index >= 0 else "", layer_index=layer_index, pass_index=0,
            accuracy=ep.accuracy, dense_accuracy=self.dense_accuracy, target_accuracy=self.target_accuracy,
            global_sparsity=self._sparsity(), target_sparsity=self.target_sparsity,
            scheduled_sparsity=self.target_sparsity * self._visited[ep.step], layer_sparsity=applied,
            requested_sparsity=requested, flops=float(self._macs()), dense_flops=float(self.graph.dense_macs),
            pruned=removed, total_weights=int(self.budget.dense))

    def _observe(self) -> np.ndarray:
        ep = self._ep
        if ep.step < self.n_steps:
            i = ep.layer
            lo, hi = ep.bounds
        else:
            i = self.n_layers - 1
            lo = hi = ep.counts[i]
        n = self.sizes[i]
        rest = sum(g.macs for g in self.groups[i + 1:])
        return self._obs.build(i, pass_index=0, prev_action=ep.prev_action, global_sparsity=self._sparsity(),
                               accuracy=ep.accuracy, flops_removed=self.graph.dense_macs - self._macs(),
                               flops_rest=rest, layer_sparsity=ep.counts[i] / n, allowed=(lo / n, hi / n))
