"""Action spaces of the pruning environment and their mapping to a requested number of pruned weights.

``env.action`` selects one of:

* ``sparsity-continuous``: ``Box(-1, 1, (1,), float32)``; action ``a`` requests sparsity
  ``min_sparsity + (a + 1) / 2 * (max_sparsity - min_sparsity)``.
* ``sparsity-discrete``: ``Discrete(len(sparsity_grid))``; action ``a`` requests ``sparsity_grid[a]``.
* ``sigma`` (PuRL): ``Discrete(len(sigma_grid))``; action ``a`` requests the fraction of the layer's
  weights with ``|w| < alpha * std(w)``, ``alpha = sigma_grid[a]`` (population std of the layer's
  current weights).
* ``prior-relative``: ``Box(-1, 1, (1,), float32)``; action ``a`` adjusts the layer's *base* count
  ``b`` (the prior allocation's count, see :mod:`envs.prior`, rescaled by the budget so the layers left
  can still land on the target): sparsity ``sigmoid(logit(b / n) + prior_scale * a)``, with ``b / n``
  clamped to ``[0.5 / n, 1 - 0.5 / n]`` so a layer the prior keeps dense (or prunes fully) can move.
  ``a == 0`` requests exactly ``b``. Working in logit space keeps steps proportionate at every
  sparsity (0.99 -> 0.999 is as big a step as 0.5 -> 0.9). The zero policy is the prior itself, so
  an agent starts from a strong allocation and learns where to deviate from it.

The first three modes are PuRL's and AMC's own action spaces (faithful reproductions); the
prior-relative mode is PuRL-framework's default for agents that must beat the baselines.

The requested count is ``round(sparsity * n)``; the environment then clips it to what the
constraints and the budget allow. Anything outside the space (wrong shape, NaN, out of range,
a non-integer for a discrete space) raises :class:`InvalidActionError`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from purl.config import EnvConfig
from purl.errors import PurlError


class InvalidActionError(PurlError, ValueError):
    """An action is not an element of the environment's action space."""


class ActionMap:
    """Base: ``space`` plus ``requested(action, weight) -> (requested sparsity, requested count)``.

    Each mode declares its capabilities, which the one validation reads (:meth:`ChannelGranularity.check
    <envs.granularity.channel.ChannelGranularity.check>`, ``agents.algorithms.check_action_mode``): ``kind``,
    the kind of action space it produces, and ``granularities``, the ``prune.granularity`` values it has a
    meaning at.
    """

    space: spaces.Space
    mode: str = ""
    kind: ClassVar[Literal["continuous", "discrete"]] = "continuous"
    granularities: ClassVar[tuple[str, ...]] = ("weight", "channel")

    def requested(self, action: Any, weight: Tensor, layer_index: int, dense: bool,
                  base: int | None = None) -> tuple[float, int]:
        """Sparsity and pruned-weight count ``action`` asks for on a layer with weights ``weight``.

        ``dense`` says the weights are still the dense model's (lets the sigma mode use a precomputed table);
        ``base`` is the prior-relative mode's base count (ignored by the other modes).
        """
        return self.requested_count(action, weight.numel(), base)

    def requested_count(self, action: Any, n: int, base: int | None = None) -> tuple[float, int]:
        """Fraction and count of ``n`` units (weights, or a group's channels) ``action`` asks to remove.

        Every mode but ``sigma`` (which thresholds the weights themselves) is defined on a count alone.
        """
        raise NotImplementedError(f"action mode '{self.mode}' needs the layer's weights")

    def describe(self, action: Any) -> str:
        return repr(action)


class ContinuousSparsity(ActionMap):
    """A scalar in [-1, 1] mapped linearly onto [min_sparsity, max_sparsity]."""

    mode = "sparsity-continuous"

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = float(low), float(high)
        self.space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def value(self, action: Any) -> float:
        try:
            arr = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidActionError(f"action {action!r} is not a number; expected a float32 array of shape (1,) "
                                     "in [-1, 1]") from None
        if arr.size != 1:
            raise InvalidActionError(f"action has shape {arr.shape}; expected shape (1,) (one value in [-1, 1])")
        a = float(arr.reshape(-1)[0])
        if a != a:
            raise InvalidActionError("action is NaN; expected a value in [-1, 1]")
        if not -1.0 - 1e-6 <= a <= 1.0 + 1e-6:
            raise InvalidActionError(f"action {a} is outside the action space [-1, 1]")
        return min(max(a, -1.0), 1.0)

    def requested_count(self, action: Any, n: int, base: int | None = None) -> tuple[float, int]:
        s = self.low + (self.value(action) + 1.0) * 0.5 * (self.high - self.low)
        s = min(max(s, 0.0), 1.0)
        return s, int(round(s * n))


def discrete_index(action: Any, n: int) -> int:
    """The integer in ``range(n)`` that ``action`` denotes, or InvalidActionError."""
    if isinstance(action, bool | np.bool_):
        raise InvalidActionError(f"action {action!r} is a boolean; expected an integer in [0, {n - 1}]")
    if isinstance(action, int | np.integer):
        index = int(action)
    else:
        try:
            arr = np.asarray(action)
        except (TypeError, ValueError):
            arr = None
        if arr is None or arr.size != 1 or arr.dtype.kind not in "iuf":
            raise InvalidActionError(f"action {action!r} is not an integer in [0, {n - 1}]")
        value = arr.reshape(-1)[0]
        if arr.dtype.kind == "f":
            if value != value:
                raise InvalidActionError(f"action is NaN; expected an integer in [0, {n - 1}]")
            if float(value) != int(value):
                raise InvalidActionError(f"action {float(value)} is not an integer in [0, {n - 1}]")
        index = int(value)
    if not 0 <= index < n:
        raise InvalidActionError(f"action {index} is outside the action space Discrete({n}) (0..{n - 1})")
    return index


class DiscreteSparsity(ActionMap):
    """An index into ``sparsity_grid``."""

    mode = "sparsity-discrete"
    kind = "discrete"

    def __init__(self, grid: Sequence[float]) -> None:
        self.grid = [float(s) for s in grid]
        self.space = spaces.Discrete(len(self.grid))

    def requested_count(self, action: Any, n: int, base: int | None = None) -> tuple[float, int]:
        s = self.grid[discrete_index(action, len(self.grid))]
        return s, int(round(s * n))


class SigmaThreshold(ActionMap):
    """PuRL's action: prune the weights with ``|w| < alpha * std(w)``, alpha an index into ``sigma_grid``."""

    mode = "sigma"
    kind = "discrete"
    granularities = ("weight",)  # it thresholds the layer's individual weights

    def __init__(self, grid: Sequence[float]) -> None:
        self.grid = [float(a) for a in grid]
        self.space = spaces.Discrete(len(self.grid))
        self._dense_counts: dict[int, list[int]] = {}

    @torch.no_grad()
    def counts(self, weight: Tensor) -> list[int]:
        """Number of weights below ``alpha * std`` for every alpha of the grid (one sort, one sync)."""
        flat = weight.detach().reshape(-1).float()
        std = flat.std(correction=0)
        magnitudes = flat.abs().sort().values
        thresholds = std * torch.tensor(self.grid, device=flat.device, dtype=flat.dtype)
        return [int(c) for c in torch.searchsorted(magnitudes, thresholds, side="left").tolist()]

    def precompute(self, weights: Sequence[Tensor]) -> None:
        """Cache the counts of every layer's dense weights (valid while a layer is untouched)."""
        self._dense_counts = {i: self.counts(w) for i, w in enumerate(weights)}

    def requested(self, action: Any, weight: Tensor, layer_index: int, dense: bool,
                  base: int | None = None) -> tuple[float, int]:
        index = discrete_index(action, len(self.grid))
        table = self._dense_counts.get(layer_index) if dense else None
        if table is None:
            table = self.counts(weight)
        k = table[index]
        return k / weight.numel(), k


class PriorRelative(ContinuousSparsity):
    """A scalar in [-1, 1] moving the layer's base count in logit space (see the module docstring)."""

    mode = "prior-relative"

    def __init__(self, scale: float) -> None:
        super().__init__(-1.0, 1.0)
        self.scale = float(scale)

    def requested_count(self, action: Any, n: int, base: int | None = None) -> tuple[float, int]:
        if base is None:  # pragma: no cover - the env always passes it in this mode
            raise PurlError("the prior-relative action needs the layer's base count")
        a = self.value(action)
        if a == 0.0:
            return base / n, int(base)
        p = min(max(base / n, 0.5 / n), 1.0 - 0.5 / n)
        s = 1.0 / (1.0 + math.exp(-(math.log(p / (1.0 - p)) + self.scale * a)))
        return s, int(round(s * n))


ACTION_MAPS: dict[str, type[ActionMap]] = {
    cls.mode: cls for cls in (PriorRelative, ContinuousSparsity, DiscreteSparsity, SigmaThreshold)}
"""``env.action`` name -> its action map class (and its declared ``kind`` and ``granularities``)."""


def make_action_map(cfg: EnvConfig) -> ActionMap:
    """The action map of ``cfg.action``."""
    if cfg.action == "sparsity-continuous":
        return ContinuousSparsity(cfg.min_sparsity, cfg.max_sparsity)
    if cfg.action == "sparsity-discrete":
        return DiscreteSparsity(cfg.sparsity_grid)
    if cfg.action == "sigma":
        return SigmaThreshold(cfg.sigma_grid)
    if cfg.action == "prior-relative":
        return PriorRelative(cfg.prior_scale)
    raise PurlError(f"env.action: unknown action mode '{cfg.action}'")  # pragma: no cover (pydantic checks)
