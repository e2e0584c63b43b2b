"""PuRL's pruning MDP as one Gymnasium environment with a reward at every step, at any granularity.

An episode walks the model's unit groups in forward order (``env.passes`` times at weight granularity): the
prunable layers (``prune.granularity: weight``, :mod:`envs.granularity.weight`) or the coupled channel groups
(``channel``, :mod:`envs.granularity.channel`). What one step removes, and how it is counted, bounded and
restored, is the :class:`envs.granularity.Granularity`'s; this module runs the MDP once for all of them.

Each step the action (see :mod:`envs.actions`) asks for the current group's removed fraction; the request is
clipped by the shared constraints and, with ``env.budget`` on, by AMC's action wall so the episode ends at the
target (see :mod:`envs.budget`, :mod:`envs.flops_budget`, :mod:`envs.channel_budget`). The group is pruned in
place, optionally fine-tuned (``env.finetune_steps``, weight granularity), and evaluated on the
reward-validation split; the reward (see :mod:`envs.rewards`) comes back every step. ``reset`` restores the
dense weights in place. The test split is never used: the env only calls ``data.tensors("val", ...)`` and
``data.loader("train", ...)``.

Units, the same at every granularity and budget metric (``prune.budget_metric`` / ``env.budget_metric``):

* ``global_sparsity`` (step ``info``, observation feature 10, :class:`~envs.rewards.RewardContext`): the
  removed fraction of the **budget metric**: prunable weights (``params``, weight granularity), all parameters
  (``params``, channel granularity) or Conv/Linear MACs (``flops``); ``target_sparsity`` is its target;
* ``flops`` / ``dense_flops``: Conv/Linear MACs per sample; ``RewardContext.pruned_weights`` /
  ``total_weights``: Conv/Linear weights removed (zeroed, or slimmed away) / of the dense model.

Scoring is :class:`purl.evaluator.RewardEvaluator`'s (BatchNorm re-estimated on fixed train batches,
``env.bn_recalibration_batches``; memoised by the per-group counts; a prefix cache at weight granularity
without fine-tuning). ``prior-relative`` (:mod:`envs.prior`): each step's base count is the prior allocation's,
spread by the budget so deviations are shared by the remaining groups in proportion to the prior.

Step ``info`` keys: ``layer`` (the layer or group pruned by this step), ``layer_index``, ``pass``,
``requested_sparsity``, ``applied_sparsity``, ``layer_sparsities`` (groups visited so far), ``accuracy``
(reward split, top-1 fraction), ``global_sparsity``, ``flops`` (MACs of the plan), ``dense_flops``,
``reward_components`` (name -> float, summing to the reward), ``evaluations`` (real evaluations so far in this
env), ``target_sparsity``, ``target_accuracy``, ``budget_metric``, plus the granularity's (channel:
``channel_keep``); on the last step also ``purl_episode`` (``return``, ``components``, ``accuracy``,
``global_sparsity``, ``flops``, ``layer_sparsities``, ``reaches_target``, ``meets_target``, ``length``,
``dense_accuracy``, ``target_sparsity``, ``target_accuracy``, ``budget_metric``, plus the granularity's:
channel ``channel_keep``, ``params_ratio``, ``flops_ratio``). ``reaches_target``: the plan is at the budget
(what the wall lands on: :func:`envs.target.meets_target` on weights); ``meets_target``: ``reaches_target`` and
accuracy >= the accuracy target. Reset ``info``: ``layer`` (the first to prune), ``accuracy`` and
``dense_accuracy``, ``global_sparsity`` (0), ``flops``, ``dense_flops``, ``layer_sparsities`` (empty),
``evaluations``, ``target_sparsity``, ``target_accuracy``, ``budget_metric``.

Parts: the episode's mutable state is :class:`envs.episode.EpisodeState`; config resolution is
:func:`envs.config.resolve_config`; the process-wide task cache is :func:`envs.task_cache.shared_task`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from purl.config import ExperimentConfig
from purl.envs.actions import make_action_map
from purl.envs.config import resolve_config
from purl.envs.episode import EpisodeState
from purl.envs.granularity import Granularity, granularity_class
from purl.envs.granularity.base import fractions
from purl.envs.observation import ObservationBuilder, observation_space
from purl.envs.prior import resolve_prior
from purl.envs.resume import ResumableEnv
from purl.envs.rewards import RewardContext, call_reward, make_reward, reset_reward
from purl.envs.setup import RENDER_MODES, allocation_image, check_render_mode, device_and_task, reward_scoring
from purl.envs.task_cache import shared_task
from purl.errors import PurlError
from purl.task import Task

__all__ = ["PruningEnv", "resolve_config", "shared_task"]  # the last two re-exported from their modules


class PruningEnv(ResumableEnv, gym.Env):
    """Prune a network group by group (layers, or channel groups); a reward at every step.

    :param config: an :class:`ExperimentConfig`, a YAML path, or None (the task's config, else the quick default
        task).
    :param task: a built :class:`~purl.task.Task` to prune (its dense model is deep-copied, so every env owns its
        model); default: built from the config (once per process, cached on disk). When given, the task defines
        the data and the dense model; ``config`` supplies the rest (env, constraints, include/exclude) and may
        differ from ``task.config`` (e.g. its seed).
    :param device: ``cpu``, ``cuda[:N]`` or ``auto``; default: the task's device, else ``cpu``.
    :param overrides: ``key.sub=value`` strings applied to the config.
    :param render_mode: None, ``"ansi"`` (a line of text) or ``"rgb_array"`` (an image of the allocation so far).
    :param granularity: ``"weight"`` or ``"channel"`` overrides ``prune.granularity`` (``purl/ChannelPruning-v0``
        is this class with ``granularity="channel"``); None keeps the config's.
    :param env_overrides: :class:`~purl.config.EnvConfig` fields, e.g. ``reward="amc"``, ``action="sigma"``,
        ``target_sparsity=0.8`` (validated; bad values raise ConfigError).
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
        granularity: str | None = None,
        **env_overrides: Any,
    ) -> None:
        super().__init__()
        config = resolve_config(config, task, overrides, env_overrides)
        if granularity is not None and granularity != config.prune.granularity:
            config = config.model_copy(update={"prune": config.prune.model_copy(update={"granularity": granularity})})
        units_class = granularity_class(config)
        units_class.check(config)
        self.config = config
        self.render_mode = check_render_mode(render_mode, self.metadata["render_modes"])
        self.device, self.task = device_and_task(self.config, task, device)
        self.granularity: Granularity = units_class(self.config, self.task, self.device)
        self._build_rules()
        self._build_evaluator()
        self._obs = ObservationBuilder(self.granularity.profiles(), self.dense_flops, passes=self.passes,
                                       target_sparsity=self.target_sparsity, target_accuracy=self.target_accuracy)
        self._dirty = False
        self._ready = False
        self._ep = self._new_episode()
        self._proxy_scores: dict[tuple[int, ...], float] = {}  # env.terminal_proxy_steps, by per-layer counts

    # ------------------------------------------------------------------ construction
    def _build_rules(self) -> None:
        """Budget (the wall), action map (with the prior) and reward, and the per-step tables."""
        units = self.granularity
        self.model = units.model
        self.layer_names = units.names
        self.sizes = units.sizes
        self.n_layers = len(units.names)
        self.passes = units.passes
        self.n_steps = self.n_layers * self.passes
        self.total_weights = units.total_weights
        self.dense_flops = units.dense_flops
        self.budget_metric = units.budget_metric
        self.target_sparsity = self.config.env.target_sparsity
        units.build_budget(self.config)
        self.budget = units.budget
        self.action_map = make_action_map(self.config.env)
        # env.prior 'auto' -> the best baseline by the re-ranking proxy (envs/prior.py; memoised on the task),
        # once the budget has checked the target is feasible
        self.config, self.prior_choice = resolve_prior(self.task, self.config, self.config.seed)
        units.build_prior(self.config, self.action_map)
        self.prior: list[int] | None = units.prior  # the prior-relative mode's per-group counts
        self.action_space = self.action_map.space
        self.observation_space = observation_space()
        self.reward_fn = make_reward(self.config.env.reward, self.config.env.reward_kwargs)
        # the reward's on-track schedule: the budget metric's dense share visited after each step, over the episode
        shares = units.step_shares()
        self._visited = [0.0] * (self.n_steps + 1)
        for t in range(self.n_steps):
            self._visited[t + 1] = self._visited[t] + shares[t % self.n_layers]

    def _build_evaluator(self) -> None:
        """The reward-split scorer, the dense accuracy and the accuracy target."""
        memoize, prefix_cache_mb = self.granularity.scoring_options(self.config)
        scoring = reward_scoring(self.config, self.task, self.device, self.model, self.layer_names,
                                 memoize=memoize, prefix_cache_mb=prefix_cache_mb)
        self.evaluator, self.bn_recalibration_batches = scoring.evaluator, scoring.bn_recalibration_batches
        self.dense_accuracy, self.target_accuracy = scoring.dense_accuracy, scoring.target_accuracy

    @property
    def evaluations(self) -> int:
        """Real (not memoised) evaluations of the pruned network so far in this env."""
        return self.evaluator.evaluations

    def _sparsity(self) -> float:
        """The removed fraction of the budget metric (see the module docstring)."""
        dense = self.granularity.dense_budget
        return self._ep.budget_removed / dense if dense else 0.0

    # ------------------------------------------------------------------ gymnasium API
    def _new_episode(self, data_seed: int = 0) -> EpisodeState:
        ep = EpisodeState(self.n_layers, accuracy=self.dense_accuracy, data_seed=data_seed)
        ep.bounds = self.granularity.bounds(ep, 0)
        return ep

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if self._dirty:
            self.granularity.restore()
            self._dirty = False
        self._ep = self._new_episode(self._episode_seed(options))  # options: see envs.resume
        self._ready = True
        reset_reward(self.reward_fn, self._context(terminal=False, layer_index=-1, layer_sparsity=0.0,
                                                   requested=0.0))
        info = {"layer": self.layer_names[0], "accuracy": self.dense_accuracy, "dense_accuracy": self.dense_accuracy,
                "global_sparsity": 0.0, "flops": self.dense_flops, "dense_flops": self.dense_flops,
                "layer_sparsities": {}, "evaluations": self.evaluator.evaluations,
                "target_sparsity": self.target_sparsity, "target_accuracy": self.target_accuracy,
                "budget_metric": self.budget_metric}
        return self._observe(), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if not self._ready:
            raise PurlError("step() called before reset() or after the episode ended; call reset() first")
        ep = self._ep
        i = ep.layer
        requested, applied = self._prune(action)
        if self.config.env.finetune_steps:
            self.granularity.finetune(ep, self.config.env.finetune_steps)
        ep.accuracy = self.granularity.accuracy(self.evaluator, ep, i)
        ep.advance(self.n_layers)
        terminal = ep.step == self.n_steps
        if terminal and self.config.env.terminal_proxy_steps:
            ep.oneshot_accuracy = ep.accuracy
            ep.accuracy = self._terminal_proxy()
        ctx = self._context(terminal=terminal, layer_index=i, layer_sparsity=applied, requested=requested)
        components = call_reward(self.reward_fn, ctx)
        reward = ep.add_reward(components)
        ep.prev_action = applied
        if not terminal:
            ep.bounds = self.granularity.bounds(ep, ep.layer)
        info = self._step_info(i, requested, applied, components)
        if terminal:
            self._ready = False
            info["purl_episode"] = self._episode_summary(info)
        return self._observe(), float(reward), terminal, False, info

    def _prune(self, action: Any) -> tuple[float, float]:
        """Clip the action's count to the step's bounds and remove it from the current group in place;
        return the requested and the applied fraction."""
        ep, units = self._ep, self.granularity
        i = ep.layer
        lo, hi = ep.bounds
        base = None
        if self.prior is not None:
            spread = units.base_count(ep, i)
            base = lo if spread < lo else hi if spread > hi else spread
        requested, k = units.request(self.action_map, action, ep, i, base)
        k = units.snap(i, lo if k < lo else hi if k > hi else k, lo, hi)
        units.apply(ep, i, k)
        self._dirty = True
        applied = k / self.sizes[i]
        ep.visited[self.layer_names[i]] = applied
        return requested, applied

    def _terminal_proxy(self) -> float:
        """``env.terminal_proxy_steps``: the finished allocation's short-fine-tune proxy score, memoised by its
        per-layer counts (the same allocation scores the same: a fixed seed, ``config.seed``)."""
        key = tuple(self._ep.counts)
        if key not in self._proxy_scores:
            self._proxy_scores[key] = self.granularity.proxy_accuracy(
                self._ep, steps=self.config.env.terminal_proxy_steps, seed=self.config.seed,
                val_samples=self.config.env.val_samples)
        return self._proxy_scores[key]

    @property
    def proxy_evaluations(self) -> int:
        """Terminal proxy fine-tunes run so far (one per distinct allocation; ``env.terminal_proxy_steps``)."""
        return len(self._proxy_scores)

    def _step_info(self, i: int, requested: float, applied: float, components: dict[str, float]) -> dict[str, Any]:
        ep = self._ep
        return {"layer": self.layer_names[i], "layer_index": i, "pass": (ep.step - 1) // self.n_layers,
                "requested_sparsity": requested, "applied_sparsity": applied,
                "layer_sparsities": dict(ep.visited), "accuracy": ep.accuracy,
                "global_sparsity": self._sparsity(), "flops": int(round(self.dense_flops - ep.macs_removed)),
                "dense_flops": self.dense_flops, "reward_components": components,
                "evaluations": self.evaluator.evaluations, "target_sparsity": self.target_sparsity,
                "target_accuracy": self.target_accuracy, "budget_metric": self.budget_metric,
                **self.granularity.step_info(ep)}

    def _episode_summary(self, info: dict[str, Any]) -> dict[str, Any]:
        """The ``purl_episode`` record of the step that ended the episode (``info``)."""
        ep = self._ep
        reaches = self.granularity.reaches(ep)
        return {"return": ep.episode_return, "components": dict(ep.components), "accuracy": ep.accuracy,
                "global_sparsity": info["global_sparsity"], "flops": info["flops"],
                "layer_sparsities": dict(zip(self.layer_names, fractions(ep.counts, self.sizes), strict=True)),
                "reaches_target": reaches, "meets_target": bool(reaches and ep.accuracy >= self.target_accuracy),
                "length": ep.step, "dense_accuracy": self.dense_accuracy, "target_sparsity": self.target_sparsity,
                "target_accuracy": self.target_accuracy, "budget_metric": self.budget_metric,
                **({"oneshot_accuracy": ep.oneshot_accuracy} if ep.oneshot_accuracy is not None else {}),
                **self.granularity.episode_info(ep)}

    def render(self) -> str | np.ndarray | None:
        """``ansi``: one line of text; ``rgb_array``: the allocation so far as an HxWx3 uint8 image (one bar per
        layer or group at its sparsity, the next one to prune in another colour:
        :func:`purl.envs.setup.allocation_image`)."""
        ep = self._ep
        if self.render_mode == "rgb_array":
            return allocation_image(fractions(ep.counts, self.sizes), ep.layer if self._ready else None)
        if self.render_mode != "ansi":
            return None
        where = (f"{self.granularity.unit} {self.layer_names[ep.layer]} ({ep.layer + 1}/{self.n_layers}, "
                 f"pass {ep.pass_index + 1})" if self._ready else "episode over")
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
            scheduled_sparsity=self.target_sparsity * self._visited[ep.step] / self._visited[self.n_steps],
            layer_sparsity=layer_sparsity,
            requested_sparsity=requested,
            flops=self.dense_flops - ep.macs_removed,
            dense_flops=float(self.dense_flops),
            pruned_weights=ep.weights_removed,
            total_weights=self.total_weights,
            budget_metric=self.budget_metric,
        )

    def _observe(self) -> np.ndarray:
        ep = self._ep
        if ep.step < self.n_steps:
            i = ep.layer
            lo, hi = ep.bounds
        else:
            i = self.n_layers - 1
            lo = hi = ep.counts[i]
        n = self.sizes[i]
        return self._obs.build(
            i,
            pass_index=min(ep.pass_index, self.passes - 1),
            prev_action=ep.prev_action,
            global_sparsity=self._sparsity(),
            accuracy=ep.accuracy,
            flops_removed=ep.macs_removed,
            flops_rest=self.granularity.flops_rest(ep, i),
            layer_sparsity=ep.counts[i] / n,
            allowed=(lo / n, hi / n),
        )
