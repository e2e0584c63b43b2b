"""Gradual pruning with the cubic sparsity schedule of Zhu & Gupta.

Reference: M. Zhu and S. Gupta, "To prune, or not to prune: exploring the efficacy of pruning for
model compression", arXiv:1710.01878, 2017, Eq. (1):

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3      for t in [t0, t0 + n * dt],

``s_i`` before ``t0`` and ``s_f`` after ``t0 + n * dt``; masks are recomputed every ``dt`` steps.
Any :class:`~baselines.base.Allocator` can be driven by the schedule (Global MP by default
in PuRL's comparisons). Steps count optimizer steps, from 1, as the shared trainer's ``on_step``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Integral, Real
from typing import Any

import torch

from purl.baselines.base import Allocator, PruningResult, get_allocator
from purl.errors import ConfigError
from purl.pruning.constraints import Constraints
from purl.pruning.masks import MaskState

__all__ = ["CubicSchedule", "GradualPruner", "make_gradual_schedule"]


def _int(name: str, value: object, minimum: int) -> int:
    if not isinstance(value, Integral) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _fraction(name: str, value: object) -> float:
    if not isinstance(value, Real) or isinstance(value, bool) or not math.isfinite(value) or not 0 <= value <= 1:
        raise ConfigError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


class CubicSchedule:
    """Zhu & Gupta's cubic schedule from ``initial`` (at ``start_step``) to ``final`` (at ``end_step``).

    Give the span either as ``n_steps`` pruning steps of ``frequency`` steps each
    (``end_step = start_step + n_steps * frequency``, the paper's ``n`` and ``Δt``) or as ``end_step``.
    Updates happen at ``start_step + j * frequency`` and always at ``end_step``.
    """

    def __init__(
        self,
        initial: float,
        final: float,
        start_step: int,
        n_steps: int | None = None,
        end_step: int | None = None,
        frequency: int = 1,
    ) -> None:
        self.initial = _fraction("initial sparsity", initial)
        self.final = _fraction("final sparsity", final)
        if self.initial > self.final:
            raise ConfigError(f"initial sparsity {initial} must not exceed final sparsity {final}")
        self.start_step = _int("start_step", start_step, 0)
        self.frequency = _int("frequency", frequency, 1)
        if (n_steps is None) == (end_step is None):
            raise ConfigError("give exactly one of n_steps (number of pruning steps) and end_step")
        if n_steps is not None:
            self.end_step = self.start_step + _int("n_steps", n_steps, 1) * self.frequency
        else:
            self.end_step = _int("end_step", end_step, 0)
            if self.end_step <= self.start_step:
                raise ConfigError(f"end_step ({end_step}) must be after start_step ({start_step})")

    def sparsity_at(self, step: int) -> float:
        """Target sparsity at ``step`` (``initial`` up to ``start_step``, ``final`` from ``end_step``)."""
        if step <= self.start_step:
            return self.initial
        if step >= self.end_step:
            return self.final
        progress = (step - self.start_step) / (self.end_step - self.start_step)
        return self.final + (self.initial - self.final) * (1.0 - progress) ** 3

    def should_update(self, step: int) -> bool:
        """True at ``start_step + j * frequency`` inside the span, and at ``end_step``."""
        if step < self.start_step or step > self.end_step:
            return False
        return step == self.end_step or (step - self.start_step) % self.frequency == 0

    def update_steps(self) -> list[int]:
        """Every step at which the masks are recomputed."""
        steps = list(range(self.start_step, self.end_step, self.frequency))
        return steps + [self.end_step]

    def __repr__(self) -> str:
        return (
            f"CubicSchedule(initial={self.initial}, final={self.final}, start_step={self.start_step}, "
            f"end_step={self.end_step}, frequency={self.frequency})"
        )


def make_gradual_schedule(
    final_sparsity: float,
    total_steps: int,
    frequency: int = 100,
    start_fraction: float = 0.0,
    end_fraction: float = 0.75,
    initial_sparsity: float = 0.0,
) -> CubicSchedule:
    """A cubic schedule pruning from ``start_fraction`` to ``end_fraction`` of ``total_steps`` training steps.

    Defaults follow common practice after Zhu & Gupta (prune over the first 75 % of training, then
    fine-tune at the final sparsity). ``end_step`` is always an update, so the final sparsity is
    reached exactly even when the span is not a multiple of ``frequency``.
    """
    total = _int("total_steps", total_steps, 1)
    start_f = _fraction("start_fraction", start_fraction)
    end_f = _fraction("end_fraction", end_fraction)
    if start_f >= end_f:
        raise ConfigError(f"start_fraction ({start_fraction}) must be below end_fraction ({end_fraction})")
    start = int(round(start_f * total))
    end = max(int(round(end_f * total)), 1)
    if end <= start:
        raise ConfigError(
            f"total_steps={total} is too small for start_fraction={start_fraction}, end_fraction={end_fraction}"
        )
    return CubicSchedule(initial_sparsity, final_sparsity, start, end_step=end, frequency=frequency)


class GradualPruner:
    """Training-step callback re-pruning a :class:`MaskState` along a schedule with any allocator.

    Call it (or its alias :meth:`on_step`) after every optimizer step with the 1-based step. At each
    update step the masks are recomputed by ``allocator.prune(masks, schedule.sparsity_at(step))``
    from the current weights (pruned weights are zero, hence pruned first). If the exact
    ``end_step`` is missed (e.g. a resumed run), the first later call applies the final sparsity,
    so training always ends at exactly ``final``. Steps whose target is 0 are skipped.
    """

    def __init__(
        self,
        allocator: Allocator | str,
        masks: MaskState,
        schedule: CubicSchedule,
        constraints: Constraints = Constraints(),
        *,
        generator: torch.Generator | None = None,
        callback: Callable[[int, PruningResult], Any] | None = None,
    ) -> None:
        self.allocator = get_allocator(allocator)
        self.masks = masks
        self.schedule = schedule
        self.constraints = constraints
        self.generator = generator
        self.callback = callback
        constraints.target_count(masks.layers, schedule.final)  # fail now, not at the end of training
        self.current_sparsity: float | None = None
        self.last_step: int | None = None
        self.history: list[tuple[int, float]] = []

    @property
    def finished(self) -> bool:
        return self.current_sparsity == self.schedule.final and (self.last_step or 0) >= self.schedule.end_step

    def __call__(self, step: int) -> PruningResult | None:
        due = self.schedule.should_update(step)
        catch_up = step > self.schedule.end_step and not self.finished
        if not (due or catch_up):
            return None
        target = self.schedule.sparsity_at(step)
        if target == 0.0:
            return None
        result = self.allocator.prune(self.masks, target, self.constraints, generator=self.generator)
        self.current_sparsity = target
        self.last_step = step
        self.history.append((step, target))
        if self.callback is not None:
            self.callback(step, result)
        return result

    on_step = __call__

    def state_dict(self) -> dict[str, Any]:
        return {"current_sparsity": self.current_sparsity, "last_step": self.last_step, "history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.current_sparsity = state["current_sparsity"]
        self.last_step = state["last_step"]
        self.history = [tuple(h) for h in state.get("history", [])]  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"GradualPruner({self.allocator!r}, {self.schedule!r})"
