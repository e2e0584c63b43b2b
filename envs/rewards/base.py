"""What a reward sees (:class:`RewardContext`) and the base class of the built-in rewards (:class:`Reward`).

A reward is a class: ``__init__(**kwargs)`` takes its weights from ``env.reward_kwargs``,
``reset(ctx)`` is called at every episode start with the dense state (``ctx.step == 0``), and
``__call__(ctx)`` after every step returns its *components* (name -> float); the step's reward is
their sum. Subclasses of :class:`Reward` declare their keyword arguments and defaults in
``defaults`` (and, for string options, the allowed values in ``choices``); unknown or mistyped
keyword arguments raise :class:`~purl.errors.ConfigError`. They also declare where they apply:
``granularities`` (the ``prune.granularity`` values whose context they read correctly; both by default,
since every :class:`RewardContext` field means the same at each) and ``timing`` (``per-step``: a signal at
every step, PuRL's design; ``terminal``: only at the episode's last step, AMC's). The one validation,
:func:`~purl.envs.rewards.registry.make_reward` with the granularity, reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from purl.errors import ConfigError


@dataclass(frozen=True, slots=True)
class RewardContext:
    """The state of the pruning MDP right after a step (or at reset, with ``step == 0``).

    The fields mean the same at every granularity and budget metric. Accuracies are top-1 fractions on the
    reward-validation split; ``global_sparsity``, ``target_sparsity`` and ``scheduled_sparsity`` are fractions
    of the **budget metric** (``budget_metric``: ``params``, the prunable weights at weight granularity or all
    parameters at channel granularity; ``flops``, Conv/Linear MACs); ``layer_sparsity`` and
    ``requested_sparsity`` are fractions of the step's units (a layer's weights, a group's channels); FLOPs are
    multiply-accumulates per sample (see :mod:`purl.pruning.metrics`); ``pruned_weights`` / ``total_weights``
    count Conv/Linear weights (zeroed, or slimmed away with their channels).
    """

    step: int  #: steps taken so far in this episode, this one included (0 at reset)
    n_steps: int  #: steps per episode (prunable layers x passes)
    terminal: bool  #: True on the episode's last step
    layer: str  #: the layer pruned by this step ("" at reset)
    layer_index: int  #: its index among the prunable layers (-1 at reset)
    pass_index: int  #: 0-based pass over the layers
    accuracy: float  #: accuracy of the network as pruned so far
    dense_accuracy: float  #: accuracy of the dense network
    target_accuracy: float  #: the accuracy target
    global_sparsity: float  #: removed fraction of the budget metric so far
    target_sparsity: float  #: the episode's target, a fraction of the budget metric
    scheduled_sparsity: float  #: target x the budget metric's dense share visited so far (on-track sparsity)
    layer_sparsity: float  #: fraction of the step's units this step removed (after constraints/budget)
    requested_sparsity: float  #: fraction of the step's units the action asked for
    flops: float  #: MACs per sample of the network as pruned so far
    dense_flops: float  #: MACs per sample of the dense network
    pruned_weights: int  #: Conv/Linear weights removed so far
    total_weights: int  #: Conv/Linear weights of the dense model that the granularity may remove
    budget_metric: str = "params"  #: the unit of the sparsities above: ``params`` or ``flops``

    @property
    def progress(self) -> float:
        """Fraction of the episode's steps done, in [0, 1]."""
        return self.step / self.n_steps if self.n_steps else 1.0


class Reward:
    """Base class of rewards with validated keyword arguments.

    Subclasses set ``defaults`` (name -> default value; the value's type is enforced, ints are
    accepted for floats) and optionally ``choices`` (name -> allowed strings). Each keyword
    argument becomes an attribute. Override ``__call__`` (and ``reset`` if the reward keeps state).
    """

    name: ClassVar[str] = ""
    defaults: ClassVar[Mapping[str, Any]] = {}
    choices: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    #: the granularities whose RewardContext this reward reads correctly
    granularities: ClassVar[tuple[str, ...]] = ("weight", "channel")
    #: "per-step" (a signal at every step) or "terminal" (non-zero only on the episode's last step)
    timing: ClassVar[Literal["per-step", "terminal"]] = "per-step"

    def __init__(self, **kwargs: Any) -> None:
        label = self.name or type(self).__name__
        unknown = sorted(set(kwargs) - set(self.defaults))
        if unknown:
            allowed = ", ".join(sorted(self.defaults)) or "(none)"
            raise ConfigError(f"env.reward_kwargs: unknown key(s) {', '.join(unknown)} for reward '{label}'; "
                              f"allowed: {allowed}")
        for key, default in self.defaults.items():
            value = kwargs.get(key, default)
            setattr(self, key, _coerce(label, key, value, default, self.choices.get(key)))
        self.validate()

    def validate(self) -> None:
        """Check the keyword arguments together (raise ConfigError); called at the end of ``__init__``."""

    def reset(self, ctx: RewardContext) -> None:
        """Called at every episode start with the dense state."""

    def __call__(self, ctx: RewardContext) -> dict[str, float]:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.defaults)
        return f"{type(self).__name__}({args})"


def _coerce(label: str, key: str, value: Any, default: Any, choices: tuple[str, ...] | None) -> Any:
    where = f"env.reward_kwargs.{key} (reward '{label}')"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if isinstance(default, float | int):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        if isinstance(default, int) and not isinstance(default, bool) and not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        value = type(default)(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{where} must be finite, got {value!r}")
        return value
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        if choices is not None and value not in choices:
            raise ConfigError(f"{where} must be one of {', '.join(choices)}, got {value!r}")
        return value
    return value
