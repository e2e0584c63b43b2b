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

* Fine-tuning: SGD (momentum 0.9, no weight decay, ``lr=env.finetune_lr``), a fresh optimiser
  each episode, masks attached (pruned weights stay zero); batch order and augmentation are
  seeded from the episode's seed (``reset(seed=...)`` seeds ``np_random``, which draws it).
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
``target_accuracy``). ``reaches_target``: at least ``round(target x prunable weights)`` pruned (what
the budget lands on; :meth:`PruningEnv.reaches_target`, the one rule the callbacks and the result
selection use too); ``meets_target``: ``reaches_target`` and accuracy >= the accuracy target.
Reset ``info``: ``layer`` (the first layer to prune), ``accuracy`` and
``dense_accuracy``, ``global_sparsity`` (0), ``flops``, ``dense_flops``, ``layer_sparsities``
(empty), ``evaluations``, ``target_sparsity``, ``target_accuracy``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

from envs.actions import PriorRelative, SigmaThreshold, make_action_map
from envs.budget import Budget, layer_caps
from envs.observation import ObservationBuilder, observation_space
from envs.prior import prior_counts
from envs.rewards import RewardContext, call_reward, make_reward, reset_reward
from purl.config import AUTO_BN_BATCHES, ExperimentConfig, apply_overrides, config_from_dict, load_config, read_yaml
from purl.errors import ConfigError, PurlError
from purl.evaluator import RewardEvaluator, calibration_batches, has_batchnorm
from purl.pruning import MaskState, find_prunable_layers, magnitude_mask
from purl.pruning.constraints import Constraints
from purl.runtime import resolve_device
from purl.task import Task, build_task

_TASKS: dict[str, Task] = {}


def resolve_config(
    config: ExperimentConfig | str | Path | None,
    task: Task | None = None,
    overrides: list[str] | None = None,
    env_overrides: dict[str, Any] | None = None,
) -> ExperimentConfig:
    """The experiment config: ``config`` (object, YAML path, or None = the task's or the defaults),
    then ``overrides`` (``key.sub=value``), then ``env_overrides`` (EnvConfig fields), all validated."""
    if config is None:
        raw = task.config.to_dict() if task is not None else load_config(None).to_dict()
    elif isinstance(config, ExperimentConfig):
        raw = config.to_dict()
    elif isinstance(config, str | Path):
        raw = read_yaml(config)
    else:
        raise ConfigError(f"config must be an ExperimentConfig, a YAML path or None, got {type(config).__name__}")
    raw = apply_overrides(raw, list(overrides or []))
    if env_overrides:
        env = raw.get("env") or {}
        if not isinstance(env, dict):
            raise ConfigError("config section 'env' must be a mapping")
        raw["env"] = {**env, **env_overrides}
    return config_from_dict(raw)


def shared_task(config: ExperimentConfig, device: torch.device) -> Task:
    """``build_task`` once per process for each (task, device); envs deep-copy the dense model."""
    key = json.dumps(
        {"task": config.task_key(), "cache_dir": config.cache_dir, "data": config.data.model_dump(mode="json"),
         "model": config.model.model_dump(mode="json"), "device": str(device)},
        sort_keys=True,
    )
    task = _TASKS.get(key)
    if task is None:
        task = _TASKS[key] = build_task(config, device, progress=False)
    return task


class PruningEnv(gym.Env):
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
        render_mode: None or ``"ansi"``.
        **env_overrides: :class:`~purl.config.EnvConfig` fields, e.g. ``reward="amc"``,
            ``action="sigma"``, ``target_sparsity=0.8`` (validated; bad values raise ConfigError).
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

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
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError(f"render_mode '{render_mode}' is not supported; allowed: None, "
                              f"{', '.join(self.metadata['render_modes'])}")
        self.render_mode = render_mode
        ecfg = self.config.env
        if device is not None:
            dev = resolve_device(str(device))
        else:
            dev = task.device if task is not None else torch.device("cpu")
        self.device = dev
        self.task = task if task is not None else shared_task(self.config, dev)

        # --- this env's own model and masks
        self.model = copy.deepcopy(self.task.model).to(dev)
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
        self.passes = ecfg.passes
        self.n_steps = self.n_layers * self.passes
        self._numels = [p.numel for p in profiles]
        self._macs = [float(p.macs) for p in profiles]
        self.total_weights = sum(self._numels)
        self.dense_flops = int(sum(p.macs for p in self.task.profiles.values()))
        self._suffix_macs = [0.0] * (self.n_layers + 1)
        for i in range(self.n_layers - 1, -1, -1):
            self._suffix_macs[i] = self._suffix_macs[i + 1] + self._macs[i]

        # --- constraints, budget, actions, reward
        caps = layer_caps(self.config.constraints, layers, ecfg.max_sparsity, ecfg.min_layer_weights)
        self.budget = Budget(self._numels, caps, ecfg.target_sparsity, enabled=ecfg.budget, names=self.layer_names)
        self.target_sparsity = ecfg.target_sparsity
        self.action_map = make_action_map(ecfg)
        self.prior: list[int] | None = None  # the prior-relative mode's per-layer counts (envs/prior.py)
        if isinstance(self.action_map, PriorRelative):
            self.prior = prior_counts(ecfg.prior, layers, ecfg.target_sparsity,
                                      Constraints.from_config(self.config.constraints), self.budget.max_pruned,
                                      self.budget.target_count)
            self._prior_suffix = [sum(self.prior[i:]) for i in range(self.n_layers + 1)]
        self.action_space = self.action_map.space
        self.observation_space = observation_space()
        self.reward_fn = make_reward(ecfg.reward, ecfg.reward_kwargs)

        # --- reward-validation split (the only data a reward looks at), scored by one evaluator
        x, y = self.task.data.tensors("val", dev, ecfg.val_samples)
        self._finetune_steps = ecfg.finetune_steps
        # fixed train-split batches (eval transforms) for BatchNorm recalibration, so that an
        # evaluation stays a deterministic function of the masks and the caches stay valid
        self.bn_recalibration_batches = (
            (AUTO_BN_BATCHES if has_batchnorm(self.model) else 0) if ecfg.bn_recalibration_batches == "auto"
            else int(ecfg.bn_recalibration_batches))
        calibration = calibration_batches(self.task.data, dev, self.bn_recalibration_batches,
                                          self.config.data.batch_size)
        fixed_weights = ecfg.finetune_steps == 0  # then a layer's pruned count determines its weights
        self.evaluator = RewardEvaluator(
            self.model, self.layer_names, x, y, batch_size=self.config.data.eval_batch_size,
            calibration=calibration, memoize=bool(ecfg.cache_evaluations and fixed_weights),
            prefix_cache_mb=ecfg.activation_cache_mb if fixed_weights else 0.0)
        self.dense_accuracy = self.evaluator.dense_accuracy()
        self.target_accuracy = (
            float(ecfg.target_accuracy) if ecfg.target_accuracy is not None
            else max(self.dense_accuracy - ecfg.accuracy_drop, 0.0)
        )
        # magnitude ranks of the dense weights (int32, lazily per layer): with no fine-tuning every
        # first-pass mask is one comparison ``rank >= k`` instead of a kthvalue selection
        self._ranks: list[torch.Tensor | None] | None = [None] * self.n_layers if not self._finetune_steps else None
        if isinstance(self.action_map, SigmaThreshold):
            self.action_map.precompute(self._weights)
        self._obs = ObservationBuilder(profiles, self.dense_flops, passes=self.passes,
                                       target_sparsity=self.target_sparsity, target_accuracy=self.target_accuracy)
        # visited-weights schedule: cumulative weights after each step, over the whole episode
        self._visited_weights = [0] * (self.n_steps + 1)
        for t in range(self.n_steps):
            self._visited_weights[t + 1] = self._visited_weights[t] + self._numels[t % self.n_layers]

        self._dirty = False
        self._ready = False
        self._data_seed = 0
        self._clear_episode()

    def reaches_target(self, pruned: int) -> bool:
        """The one rule for "at the target sparsity": at least ``round(target x prunable weights)`` pruned
        (what the budget lands on exactly; a fraction test would miss it by rounding)."""
        return pruned >= self.budget.target_count

    @property
    def evaluations(self) -> int:
        """Real (not memoised) evaluations of the pruned network so far in this env."""
        return self.evaluator.evaluations

    # ------------------------------------------------------------------ episode state
    def _clear_episode(self) -> None:
        self._counts = [0] * self.n_layers
        self._removed = [0.0] * self.n_layers
        self._total_pruned = 0
        self._total_removed = 0.0
        self._step = 0
        self._pass = 0
        self._layer = 0
        self._done_in_pass = 0
        self._prev_action = 0.0
        self._accuracy = self.dense_accuracy
        self._visited: dict[str, float] = {}
        self._return = 0.0
        self._components: dict[str, float] = {}
        self._finetuned = False
        self._optimizer: torch.optim.Optimizer | None = None
        self._train_iter: Any = None
        self._train_epoch = 0
        self._bounds = self._bounds_for(0)

    def _bounds_for(self, i: int) -> tuple[int, int]:
        return self.budget.bounds(i, self._counts[i], self._total_pruned, self._done_in_pass,
                                  self._pass == self.passes - 1)

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if self._dirty:
            self.masks.restore()
            self._dirty = False
        self._clear_episode()
        self._data_seed = int(self.np_random.integers(0, 2**31 - 1))
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
        }
        return self._observe(), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if not self._ready:
            raise PurlError("step() called before reset() or after the episode ended; call reset() first")
        i = self._layer
        name = self.layer_names[i]
        n = self._numels[i]
        weight = self._weights[i]
        dense_weights = self._pass == 0 and not self._finetuned
        lo, hi = self._bounds
        base = None
        if self.prior is not None:
            spread = self.budget.spread(i, self.prior, self._prior_suffix, self._done_in_pass)
            base = lo if spread < lo else hi if spread > hi else spread
        requested, k = self.action_map.requested(action, weight, i, dense_weights, base=base)
        k = lo if k < lo else hi if k > hi else k
        current = self._counts[i]
        if k != current:
            self.masks.set_mask(name, self._dense_mask(i, k) if dense_weights and self._ranks is not None
                                else magnitude_mask(weight, k))
            self._dirty = True
            self._counts[i] = k
            self._total_pruned += k - current
            removed = self._macs[i] * k / n
            self._total_removed += removed - self._removed[i]
            self._removed[i] = removed
        self._done_in_pass += k
        applied = k / n
        self._visited[name] = applied
        if self._finetune_steps:
            self._finetune()
        self._accuracy = self.evaluator.accuracy(self._counts, next_layer=i + 1 if i + 1 < self.n_layers else None)

        # advance the pointer
        self._step += 1
        self._layer += 1
        if self._layer == self.n_layers:
            self._layer = 0
            self._pass += 1
            self._done_in_pass = 0
        terminal = self._step == self.n_steps

        ctx = self._context(terminal=terminal, layer_index=i, layer_sparsity=applied, requested=requested)
        components = call_reward(self.reward_fn, ctx)
        reward = sum(components.values())
        self._return += reward
        for key, value in components.items():
            self._components[key] = self._components.get(key, 0.0) + value
        self._prev_action = applied
        if not terminal:
            self._bounds = self._bounds_for(self._layer)
        global_sparsity = self._total_pruned / self.total_weights
        flops = int(round(self.dense_flops - self._total_removed))
        info: dict[str, Any] = {
            "layer": name,
            "layer_index": i,
            "pass": (self._step - 1) // self.n_layers,
            "requested_sparsity": requested,
            "applied_sparsity": applied,
            "layer_sparsities": dict(self._visited),
            "accuracy": self._accuracy,
            "global_sparsity": global_sparsity,
            "flops": flops,
            "dense_flops": self.dense_flops,
            "reward_components": components,
            "evaluations": self.evaluator.evaluations,
            "target_sparsity": self.target_sparsity,
            "target_accuracy": self.target_accuracy,
        }
        if terminal:
            self._ready = False
            info["purl_episode"] = {
                "return": self._return,
                "components": dict(self._components),
                "accuracy": self._accuracy,
                "global_sparsity": global_sparsity,
                "flops": flops,
                "layer_sparsities": {nm: c / m for nm, c, m in zip(self.layer_names, self._counts, self._numels,
                                                                 strict=True)},
                "reaches_target": self.reaches_target(self._total_pruned),
                "meets_target": bool(self.reaches_target(self._total_pruned)
                                     and self._accuracy >= self.target_accuracy),
                "length": self._step,
                "dense_accuracy": self.dense_accuracy,
                "target_sparsity": self.target_sparsity,
                "target_accuracy": self.target_accuracy,
            }
        return self._observe(), float(reward), terminal, False, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        where = (f"layer {self.layer_names[self._layer]} ({self._layer + 1}/{self.n_layers}, pass {self._pass + 1})"
                 if self._ready else "episode over")
        return (f"step {self._step}/{self.n_steps} {where}: accuracy {self._accuracy:.4f} "
                f"(target {self.target_accuracy:.4f}), global sparsity "
                f"{self._total_pruned / self.total_weights:.4f} (target {self.target_sparsity:.4f})\n")

    def close(self) -> None:
        self._train_iter = None
        self._optimizer = None

    # ------------------------------------------------------------------ helpers
    def _context(self, *, terminal: bool, layer_index: int, layer_sparsity: float, requested: float) -> RewardContext:
        return RewardContext(
            step=self._step,
            n_steps=self.n_steps,
            terminal=terminal,
            layer=self.layer_names[layer_index] if layer_index >= 0 else "",
            layer_index=layer_index,
            pass_index=(self._step - 1) // self.n_layers if self._step else 0,
            accuracy=self._accuracy,
            dense_accuracy=self.dense_accuracy,
            target_accuracy=self.target_accuracy,
            global_sparsity=self._total_pruned / self.total_weights,
            target_sparsity=self.target_sparsity,
            scheduled_sparsity=self.target_sparsity * self._visited_weights[self._step]
            / self._visited_weights[self.n_steps],
            layer_sparsity=layer_sparsity,
            requested_sparsity=requested,
            flops=self.dense_flops - self._total_removed,
            dense_flops=float(self.dense_flops),
            pruned=self._total_pruned,
            total_weights=self.total_weights,
        )

    def _observe(self) -> np.ndarray:
        if self._step < self.n_steps:
            i = self._layer
            lo, hi = self._bounds
        else:
            i = self.n_layers - 1
            lo = hi = self._counts[i]
        n = self._numels[i]
        rest = self._suffix_macs[i + 1]
        if self._pass > 0:  # later layers may already be pruned (passes > 1, or the terminal state)
            rest -= sum(self._removed[i + 1:])
        return self._obs.build(
            i,
            pass_index=min(self._pass, self.passes - 1),
            prev_action=self._prev_action,
            global_sparsity=self._total_pruned / self.total_weights,
            accuracy=self._accuracy,
            flops_removed=self._total_removed,
            flops_rest=rest,
            layer_sparsity=self._counts[i] / n,
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

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        while True:
            if self._train_iter is None:
                loader = self.task.data.loader("train", self.config.data.batch_size,
                                               seed=self._data_seed + self._train_epoch, drop_last=False)
                self._train_iter = iter(loader)
            try:
                x, y = next(self._train_iter)
            except StopIteration:
                self._train_iter = None
                self._train_epoch += 1
                continue
            return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def _finetune(self) -> None:
        """``finetune_steps`` SGD steps on train-split batches with the masks kept (seeded per episode)."""
        model = self.model
        if self._optimizer is None:
            self._optimizer = torch.optim.SGD(model.parameters(), lr=self.config.env.finetune_lr, momentum=0.9)
        optimizer = self._optimizer
        cuda = self.device.type == "cuda"
        index = (self.device.index or 0) if cuda else None
        seed = self._data_seed + 7919 * self._step
        with torch.random.fork_rng(devices=[index] if cuda else []):
            torch.default_generator.manual_seed(seed)  # augmentation / dropout of this step
            if cuda:
                torch.cuda.default_generators[index].manual_seed(seed)
            self.masks.attach(optimizer)
            model.train()
            try:
                for _ in range(self._finetune_steps):
                    x, y = self._next_batch()
                    loss = F.cross_entropy(model(x), y)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
            finally:
                self.masks.detach()
                self.masks.apply()
                model.eval()
        self._finetuned = True
        self._dirty = True
