"""PuRL's pruning MDP as a Gymnasium environment with a reward at every step.

An episode walks the prunable layers in forward order (``env.passes`` times). Each step the
action sets the current layer's sparsity (see :mod:`envs.actions`); the request is clipped by
the shared constraints and, with ``env.budget`` on, by AMC's action wall so the episode ends at
exactly the target global sparsity (see :mod:`envs.budget`). The layer is pruned by magnitude
to the exact count (:class:`~purl.pruning.MaskState`), optionally fine-tuned for
``env.finetune_steps`` train-split mini-batches with the masks kept, and evaluated on the
reward-validation split; the reward (see :mod:`envs.rewards`) comes back every step. ``reset``
restores the dense weights in place. The test split is never used: the env only calls
``data.tensors("val", ...)`` and ``data.loader("train", ...)``.

Details:

* Fine-tuning: the core's one :class:`purl.training.MaskedTrainer` (SGD, momentum 0.9, no weight
  decay, ``lr=env.finetune_lr``), a fresh one each episode, masks attached (pruned weights stay
  zero); batch order and augmentation are seeded from the episode's seed (``reset(seed=...)``
  seeds ``np_random``, which draws it).
* Scoring is :class:`purl.evaluator.RewardEvaluator`'s. With ``finetune_steps == 0``: accuracies
  are memoised by the tuple of per-layer pruned counts (``env.cache_evaluations``), and a prefix
  cache keeps the reward split's activations in front of the next layer, so a step runs only the
  rest of the network (``env.activation_cache_mb``; identical accuracies). The dense accuracy is
  evaluated once at construction (reset never evaluates).
* BatchNorm recalibration (``env.bn_recalibration_batches``, default ``auto``: on exactly when the
  model has BatchNorm layers): before each evaluation the BatchNorm running statistics are
  re-estimated on fixed train-split batches, since a pruned BN network evaluated with the dense
  statistics scores at chance (docs/RESULTS.md). With the prefix cache only the suffix's BatchNorm
  layers are re-estimated.
* ``prior-relative`` action (:mod:`envs.actions`, :mod:`envs.prior`): each step's base count is the
  prior allocation's, rescaled by :meth:`envs.budget.Budget.spread` so deviations are spread over the
  remaining layers in proportion to the prior.
* Without fine-tuning, first-pass masks come from a per-layer stable magnitude ranking of the
  dense weights (int32, computed on first use), identical to :func:`~purl.pruning.magnitude_mask`.

Step ``info`` keys: ``layer`` (pruned by this step), ``layer_index``, ``pass``,
``requested_sparsity``, ``applied_sparsity``, ``layer_sparsities`` (layers visited so far),
``accuracy`` (reward split, top-1 fraction), ``global_sparsity``, ``flops`` (sparse MACs),
``dense_flops``, ``reward_components`` (name -> float, summing to the reward), ``evaluations``
(real evaluations so far in this env), ``target_sparsity``, ``target_accuracy``; on the last step
also ``purl_episode`` (``return``, ``components``, ``accuracy``, ``global_sparsity``, ``flops``,
``layer_sparsities``, ``reaches_target``, ``meets_target``, ``length``, ``dense_accuracy``, ``target_sparsity``,
``target_accuracy``, ``budget_metric``). ``reaches_target``: at least ``round(target x prunable weights)``
pruned (what the budget lands on; :func:`envs.target.meets_target`, the one rule the callbacks and the result
selection use too); ``meets_target``: ``reaches_target`` and accuracy >= the accuracy target.
Reset ``info``: ``layer`` (the first layer to prune), ``accuracy`` and
``dense_accuracy``, ``global_sparsity`` (0), ``flops``, ``dense_flops``, ``layer_sparsities``
(empty), ``evaluations``, ``target_sparsity``, ``target_accuracy``, ``budget_metric``.

FLOPs budget (``prune.budget_metric: flops``, one pass): the target is a fraction of the dense MACs,
the wall is :class:`envs.flops_budget.FlopsBudget` (the episode removes at least the target and less than
one weight's MACs more), ``global_sparsity`` is the removed MACs fraction, ``reaches_target`` the removed
MACs at the target, and the prior is the allocator at its FLOPs-equivalent weight sparsity.

Parts: the episode's mutable state is :class:`envs.episode.EpisodeState`; scoring (reward split, BatchNorm
recalibration, memoisation, prefix cache) is :class:`purl.evaluator.RewardEvaluator`; config resolution is
:func:`envs.config.resolve_config`; the process-wide task cache is :func:`envs.task_cache.shared_task`; the
"at the target" rule is :func:`envs.target.meets_target`.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from purl.config import ExperimentConfig
from purl.envs.actions import PriorRelative, SigmaThreshold, make_action_map
from purl.envs.budget import Budget, layer_caps
from purl.envs.config import resolve_config
from purl.envs.episode import EpisodeState
from purl.envs.flops_budget import FlopsBudget, check_flops_env_config
from purl.envs.observation import ObservationBuilder, observation_space
from purl.envs.prior import flops_prior_counts, prior_counts, resolve_prior
from purl.envs.resume import ResumableEnv
from purl.envs.rewards import RewardContext, call_reward, make_reward, reset_reward
from purl.envs.setup import RENDER_MODES, allocation_image, check_render_mode, device_and_task, reward_scoring
from purl.envs.target import meets_target
from purl.envs.task_cache import shared_task
from purl.errors import ConfigError, PurlError
from purl.pruning import MaskState, PrunableLayer, find_prunable_layers, magnitude_mask
from purl.pruning.constraints import Constraints
from purl.task import Task
from purl.training import MaskedTrainer, momentum_sgd

__all__ = ["PruningEnv", "resolve_config", "shared_task"]  # the last two re-exported from their modules


class PruningEnv(ResumableEnv, gym.Env):
    """Prune a network layer by layer; a reward at every step.

    Args:
        config: an :class:`ExperimentConfig`, a YAML path, or None (the task's config, else the
            quick default task).
        task: a built :class:`~purl.task.Task` to prune (its dense model is deep-copied, so every
            env owns its model); default: built from the config (once per process, cached on disk).
            When given, the task defines the data and the dense model; ``config`` supplies the rest
            (env, constraints, include/exclude) and may differ from ``task.config`` (e.g. its seed).
        device: ``cpu``, ``cuda[:N]`` or ``auto``; default: the task's device, else ``cpu``.
        overrides: ``key.sub=value`` strings applied to the config.
        render_mode: None, ``"ansi"`` (a line of text) or ``"rgb_array"`` (an image of the allocation so far).
        **env_overrides: :class:`~purl.config.EnvConfig` fields, e.g. ``reward="amc"``,
            ``action="sigma"``, ``target_sparsity=0.8`` (validated; bad values raise ConfigError).
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
        self.config = resolve_config(config, task, overrides, env_overrides)
        if self.config.prune.granularity != "weight":
            raise ConfigError(f"prune.granularity is '{self.config.prune.granularity}': PruningEnv prunes individual "
                              "weights; use envs.ChannelPruningEnv (purl/ChannelPruning-v0), or envs.env_class(config) "
                              "to pick the env of a config")
        self.render_mode = check_render_mode(render_mode, self.metadata["render_modes"])
        self.device, self.task = device_and_task(self.config, task, device)
        layers = self._build_model()
        self._build_rules(layers)
        self._build_evaluator()
        self._obs = ObservationBuilder([self.task.profiles[name] for name in self.layer_names], self.dense_flops,
                                       passes=self.passes, target_sparsity=self.target_sparsity,
                                       target_accuracy=self.target_accuracy)
        # visited-weights schedule: cumulative weights after each step, over the whole episode
        sizes = self._macs if self.budget_metric == "flops" else self._numels  # what the budget counts
        self._visited_weights = [0.0] * (self.n_steps + 1)
        for t in range(self.n_steps):
            self._visited_weights[t + 1] = self._visited_weights[t] + sizes[t % self.n_layers]
        self._dirty = False
        self._ready = False
        self._ep = self._new_episode()

    # ------------------------------------------------------------------ construction
    def _build_model(self) -> list[PrunableLayer]:
        """This env's own model and masks, and the per-layer tables (sizes, MACs)."""
        self.model = copy.deepcopy(self.task.model).to(self.device)
        self.model.eval()
        layers = find_prunable_layers(self.model, self.config.model.include, self.config.model.exclude)
        self.masks = MaskState(self.model, layers)
        self.layer_names = [layer.name for layer in layers]
        self._weights = [layer.weight for layer in layers]
        missing = [name for name in self.layer_names if name not in self.task.profiles]
        if missing:
            raise PurlError(f"no layer profile for prunable layer(s) {missing}; was the task built for this model?")
        profiles = [self.task.profiles[name] for name in self.layer_names]
        self.n_layers = len(layers)
        self.passes = self.config.env.passes
        self.n_steps = self.n_layers * self.passes
        self._numels = [p.numel for p in profiles]
        self._macs = [float(p.macs) for p in profiles]
        self.total_weights = sum(self._numels)
        self.dense_flops = int(sum(p.macs for p in self.task.profiles.values()))
        self._suffix_macs = [0.0] * (self.n_layers + 1)
        for i in range(self.n_layers - 1, -1, -1):
            self._suffix_macs[i] = self._suffix_macs[i + 1] + self._macs[i]
        return layers

    def _build_rules(self, layers: list[PrunableLayer]) -> None:
        """Constraints, budget, action map (with its prior or precomputed thresholds) and reward."""
        ecfg = self.config.env
        caps = layer_caps(self.config.constraints, layers, ecfg.max_sparsity, ecfg.min_layer_weights)
        self.budget_metric = self.config.budget_metric()
        self.budget: Budget | FlopsBudget
        if self.budget_metric == "flops":  # remove target x the dense MACs (envs/flops_budget.py)
            check_flops_env_config(self.config)
            self.budget = FlopsBudget(self._numels, self._macs, caps, ecfg.target_sparsity, self.dense_flops,
                                      enabled=ecfg.budget)
        else:
            self.budget = Budget(self._numels, caps, ecfg.target_sparsity, enabled=ecfg.budget,
                                 names=self.layer_names)
        self.target_sparsity = ecfg.target_sparsity
        self.action_map = make_action_map(ecfg)
        self.prior: list[int] | None = None  # the prior-relative mode's per-layer counts (envs/prior.py)
        # env.prior 'auto' -> the best baseline by the re-ranking proxy (envs/prior.py; memoised on the task),
        # once the budget has checked the target is feasible
        self.config, self.prior_choice = resolve_prior(self.task, self.config, self.config.seed)
        ecfg = self.config.env
        if isinstance(self.action_map, PriorRelative):
            constraints = Constraints.from_config(self.config.constraints, min_threshold=ecfg.prior_min_threshold)
            if isinstance(self.budget, FlopsBudget):
                self.prior = flops_prior_counts(ecfg.prior, layers, ecfg.target_sparsity, constraints,
                                                self.budget.max_pruned, self.task.profiles)
            else:
                self.prior = prior_counts(ecfg.prior, layers, ecfg.target_sparsity, constraints,
                                          self.budget.max_pruned, self.budget.target_count)
            self._prior_suffix = [sum(self.prior[i:]) for i in range(self.n_layers + 1)]
        if isinstance(self.action_map, SigmaThreshold):
            self.action_map.precompute(self._weights)
        self.action_space = self.action_map.space
        self.observation_space = observation_space()
        self.reward_fn = make_reward(ecfg.reward, ecfg.reward_kwargs)

    def _build_evaluator(self) -> None:
        """The reward-split scorer, the dense accuracy, the accuracy target and the first-pass ranks."""
        ecfg = self.config.env
        self._finetune_steps = ecfg.finetune_steps
        fixed_weights = ecfg.finetune_steps == 0  # then a layer's pruned count determines its weights
        scoring = reward_scoring(self.config, self.task, self.device, self.model, self.layer_names,
                                 memoize=bool(ecfg.cache_evaluations and fixed_weights),
                                 prefix_cache_mb=ecfg.activation_cache_mb if fixed_weights else 0.0)
        self.evaluator, self.bn_recalibration_batches = scoring.evaluator, scoring.bn_recalibration_batches
        self.dense_accuracy, self.target_accuracy = scoring.dense_accuracy, scoring.target_accuracy
        # magnitude ranks of the dense weights (int32, lazily per layer): with no fine-tuning every
        # first-pass mask is one comparison ``rank >= k`` instead of a kthvalue selection
        self._ranks: list[torch.Tensor | None] | None = [None] * self.n_layers if not self._finetune_steps else None

    def reaches_target(self, pruned: int) -> bool:
        """Whether ``pruned`` weights are at the target sparsity (:func:`envs.target.meets_target`)."""
        return meets_target(pruned, self.total_weights, self.target_sparsity)

    def _at_target(self) -> bool:
        """Whether the episode so far is at the budget: the pruned-count rule, or the removed MACs on a FLOPs budget."""
        return self.budget.reaches(self._ep.total_pruned, self._ep.total_removed)

    def _sparsity(self) -> float:
        """The removed fraction of the budget metric: prunable weights, or the dense MACs on a FLOPs budget."""
        ep = self._ep
        if self.budget_metric == "flops":
            return ep.total_removed / self.dense_flops if self.dense_flops else 0.0
        return ep.total_pruned / self.total_weights

    @property
    def evaluations(self) -> int:
        """Real (not memoised) evaluations of the pruned network so far in this env."""
        return self.evaluator.evaluations

    # ------------------------------------------------------------------ episode state
    def _new_episode(self, data_seed: int = 0) -> EpisodeState:
        ep = EpisodeState(self.n_layers, accuracy=self.dense_accuracy, data_seed=data_seed)
        ep.bounds = self._bounds_for(ep, 0)
        return ep

    def _bounds_for(self, ep: EpisodeState, i: int) -> tuple[int, int]:
        return self.budget.bounds(i, ep.counts[i], ep.total_pruned, ep.done_in_pass, ep.pass_index == self.passes - 1,
                                  removed=ep.total_removed - ep.removed[i])

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if self._dirty:
            self.masks.restore()
            self._dirty = False
        self._ep = self._new_episode(self._episode_seed(options))  # options: see envs.resume
        self._ready = True
        reset_reward(self.reward_fn, self._context(terminal=False, layer_index=-1, layer_sparsity=0.0,
                                                   requested=0.0))
        info = {
            "layer": self.layer_names[0],
            "accuracy": self.dense_accuracy,
            "dense_accuracy": self.dense_accuracy,
            "global_sparsity": 0.0,
            "flops": self.dense_flops,
            "dense_flops": self.dense_flops,
            "layer_sparsities": {},
            "evaluations": self.evaluator.evaluations,
            "target_sparsity": self.target_sparsity,
            "target_accuracy": self.target_accuracy,
            "budget_metric": self.budget_metric,
        }
        return self._observe(), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if not self._ready:
            raise PurlError("step() called before reset() or after the episode ended; call reset() first")
        ep = self._ep
        i = ep.layer
        requested, applied = self._prune_layer(action)
        if self._finetune_steps:
            self._finetune()
        ep.accuracy = self.evaluator.accuracy(ep.counts, next_layer=i + 1 if i + 1 < self.n_layers else None)
        ep.advance(self.n_layers)
        terminal = ep.step == self.n_steps
        ctx = self._context(terminal=terminal, layer_index=i, layer_sparsity=applied, requested=requested)
        components = call_reward(self.reward_fn, ctx)
        reward = ep.add_reward(components)
        ep.prev_action = applied
        if not terminal:
            ep.bounds = self._bounds_for(ep, ep.layer)
        info = self._step_info(i, requested, applied, components)
        if terminal:
            self._ready = False
            info["purl_episode"] = self._episode_summary(info)
        return self._observe(), float(reward), terminal, False, info

    def _prune_layer(self, action: Any) -> tuple[float, float]:
        """Clip the action's count to the step's bounds and prune the current layer to it by magnitude;
        return the requested and the applied sparsity."""
        ep = self._ep
        i = ep.layer
        n = self._numels[i]
        weight = self._weights[i]
        dense_weights = ep.pass_index == 0 and not ep.finetuned
        lo, hi = ep.bounds
        base = None
        if self.prior is not None:
            spread = self.budget.spread(i, self.prior, self._prior_suffix, ep.done_in_pass,
                                        removed=ep.total_removed - ep.removed[i])
            base = lo if spread < lo else hi if spread > hi else spread
        requested, k = self.action_map.requested(action, weight, i, dense_weights, base=base)
        k = lo if k < lo else hi if k > hi else k
        if k != ep.counts[i]:
            self.masks.set_mask(self.layer_names[i], self._dense_mask(i, k) if dense_weights and self._ranks is not None
                                else magnitude_mask(weight, k))
            self._dirty = True
            ep.set_count(i, k, self._macs[i] * k / n)
        ep.done_in_pass += k
        applied = k / n
        ep.visited[self.layer_names[i]] = applied
        return requested, applied

    def _step_info(self, i: int, requested: float, applied: float, components: dict[str, float]) -> dict[str, Any]:
        ep = self._ep
        return {
            "layer": self.layer_names[i],
            "layer_index": i,
            "pass": (ep.step - 1) // self.n_layers,
            "requested_sparsity": requested,
            "applied_sparsity": applied,
            "layer_sparsities": dict(ep.visited),
            "accuracy": ep.accuracy,
            "global_sparsity": self._sparsity(),
            "flops": int(round(self.dense_flops - ep.total_removed)),
            "dense_flops": self.dense_flops,
            "reward_components": components,
            "evaluations": self.evaluator.evaluations,
            "target_sparsity": self.target_sparsity,
            "target_accuracy": self.target_accuracy,
            "budget_metric": self.budget_metric,
        }

    def _episode_summary(self, info: dict[str, Any]) -> dict[str, Any]:
        """The ``purl_episode`` record of the step that ended the episode (``info``)."""
        ep = self._ep
        reaches = self._at_target()
        return {
            "return": ep.episode_return,
            "components": dict(ep.components),
            "accuracy": ep.accuracy,
            "global_sparsity": info["global_sparsity"],
            "flops": info["flops"],
            "layer_sparsities": {nm: c / m for nm, c, m in zip(self.layer_names, ep.counts, self._numels,
                                                             strict=True)},
            "reaches_target": reaches,
            "meets_target": bool(reaches and ep.accuracy >= self.target_accuracy),
            "length": ep.step,
            "dense_accuracy": self.dense_accuracy,
            "target_sparsity": self.target_sparsity,
            "target_accuracy": self.target_accuracy,
            "budget_metric": self.budget_metric,
        }

    def render(self) -> str | np.ndarray | None:
        """``ansi``: one line of text; ``rgb_array``: the allocation so far as an HxWx3 uint8 image (one bar per
        layer at its sparsity, the next one to prune in another colour: :func:`purl.envs.setup.allocation_image`)."""
        ep = self._ep
        if self.render_mode == "rgb_array":
            sparsities = [c / n if n else 0.0 for c, n in zip(ep.counts, self._numels, strict=True)]
            return allocation_image(sparsities, ep.layer if self._ready else None)
        if self.render_mode != "ansi":
            return None
        where = (f"layer {self.layer_names[ep.layer]} ({ep.layer + 1}/{self.n_layers}, pass {ep.pass_index + 1})"
                 if self._ready else "episode over")
        return (f"step {ep.step}/{self.n_steps} {where}: accuracy {ep.accuracy:.4f} "
                f"(target {self.target_accuracy:.4f}), global sparsity "
                f"{self._sparsity():.4f} of the {self.budget_metric} (target {self.target_sparsity:.4f})\n")

    def close(self) -> None:
        self._ep.trainer = None

    # ------------------------------------------------------------------ helpers
    def _context(self, *, terminal: bool, layer_index: int, layer_sparsity: float, requested: float) -> RewardContext:
        ep = self._ep
        return RewardContext(
            step=ep.step,
            n_steps=self.n_steps,
            terminal=terminal,
            layer=self.layer_names[layer_index] if layer_index >= 0 else "",
            layer_index=layer_index,
            pass_index=(ep.step - 1) // self.n_layers if ep.step else 0,
            accuracy=ep.accuracy,
            dense_accuracy=self.dense_accuracy,
            target_accuracy=self.target_accuracy,
            global_sparsity=self._sparsity(),
            target_sparsity=self.target_sparsity,
            scheduled_sparsity=self.target_sparsity * self._visited_weights[ep.step]
            / self._visited_weights[self.n_steps],
            layer_sparsity=layer_sparsity,
            requested_sparsity=requested,
            flops=self.dense_flops - ep.total_removed,
            dense_flops=float(self.dense_flops),
            pruned=ep.total_pruned,
            total_weights=self.total_weights,
        )

    def _observe(self) -> np.ndarray:
        ep = self._ep
        if ep.step < self.n_steps:
            i = ep.layer
            lo, hi = ep.bounds
        else:
            i = self.n_layers - 1
            lo = hi = ep.counts[i]
        n = self._numels[i]
        rest = self._suffix_macs[i + 1]
        if ep.pass_index > 0:  # later layers may already be pruned (passes > 1, or the terminal state)
            rest -= sum(ep.removed[i + 1:])
        return self._obs.build(
            i,
            pass_index=min(ep.pass_index, self.passes - 1),
            prev_action=ep.prev_action,
            global_sparsity=ep.total_pruned / self.total_weights,
            accuracy=ep.accuracy,
            flops_removed=ep.total_removed,
            flops_rest=rest,
            layer_sparsity=ep.counts[i] / n,
            allowed=(lo / n, hi / n),
        )

    @torch.no_grad()
    def _dense_mask(self, i: int, k: int) -> torch.Tensor:
        """Keep-mask pruning the ``k`` smallest dense weights of layer ``i``: identical to
        ``magnitude_mask`` (a stable sort breaks ties by flat index), at the cost of one comparison."""
        assert self._ranks is not None
        rank = self._ranks[i]
        if rank is None:
            weight = self._weights[i].detach()
            order = torch.sort(weight.reshape(-1).abs().float(), stable=True).indices
            rank = torch.empty(weight.numel(), dtype=torch.int32, device=weight.device)
            rank[order] = torch.arange(weight.numel(), dtype=torch.int32, device=weight.device)
            rank = self._ranks[i] = rank.view(weight.shape)
        return rank >= k

    # ------------------------------------------------------------------ fine-tuning
    def _train_batches(self, data_seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This episode's endless train-split batches: epoch ``e`` shuffled with seed ``data_seed + e``."""
        for epoch in itertools.count():
            loader = self.task.data.loader("train", self.config.data.batch_size, seed=data_seed + epoch,
                                           drop_last=False)
            for x, y in loader:
                yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def _finetune(self) -> None:
        """``finetune_steps`` steps of the episode's :class:`purl.training.MaskedTrainer` (masks kept).

        The trainer lives for the episode: its optimiser (SGD, momentum 0.9, ``env.finetune_lr``) and batch
        stream carry over from one layer's fine-tune to the next; each call is seeded by the episode and step.
        """
        ep = self._ep
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
                ep.trainer.steps(self._finetune_steps)
            finally:
                model.eval()
        ep.finetuned = True
        self._dirty = True
