"""Per-layer pruning constraints shared by the baselines and the RL environment.

A :class:`Constraints` object says how many weights each prunable layer may lose:

* ``min_threshold`` -- the *Minimum Threshold* (MT) of Gupta et al. (2022), "Is Complexity
  Required for Neural Network Pruning? A Case Study on Global Magnitude Pruning". As in the
  paper's reference code it is a **percentage** of all prunable weights: every layer keeps at
  least ``int(total * min_threshold / 100)`` weights (``0.05`` means 0.05 %), and a layer that
  has fewer weights than that floor is left dense.
* ``min_weights`` -- the same floor given as an absolute count (mutually exclusive with
  ``min_threshold``).
* ``keep_dense`` -- :mod:`fnmatch` patterns of layer names that are never pruned.
* ``max_sparsity`` -- a cap on every layer's sparsity (the layer keeps at least
  ``n - floor(max_sparsity * n)`` weights).

"total" always means the total of the layers being pruned (after ``include``/``exclude``).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

from purl.errors import ConfigError, PruningError
from purl.pruning.layers import PrunableLayer
from purl.pruning.masks import pruned_count

__all__ = ["Constraints", "floor_count"]


def floor_count(fraction: float, numel: int) -> int:
    """``floor(fraction * numel)``, robust to binary rounding (``0.29 * 100`` gives 29, not 28)."""
    return int(math.floor(round(float(fraction) * numel, 6)))


def _is_real(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class Constraints:
    """Limits on how far each layer may be pruned (see the module docstring).

    The default ``Constraints()`` allows every layer to be pruned completely.
    """

    min_threshold: float | None = None
    min_weights: int | None = None
    keep_dense: tuple[str, ...] = ()
    max_sparsity: float = 1.0

    def __post_init__(self) -> None:
        mt = self.min_threshold
        if mt is not None:
            if not _is_real(mt) or not math.isfinite(mt):
                raise ConfigError(f"min_threshold must be a number (a percentage of all prunable weights), got {mt!r}")
            if not 0.0 <= mt <= 100.0:
                raise ConfigError(
                    f"min_threshold is a percentage of all prunable weights and must be in [0, 100], got {mt} "
                    "(e.g. 0.05 keeps 0.05% of all weights in every layer)"
                )
            object.__setattr__(self, "min_threshold", float(mt))
        mw = self.min_weights
        if mw is not None:
            if not isinstance(mw, Integral) or isinstance(mw, bool) or mw < 0:
                raise ConfigError(f"min_weights must be a non-negative integer count of weights, got {mw!r}")
            object.__setattr__(self, "min_weights", int(mw))
        if mt is not None and mw is not None:
            raise ConfigError(
                "give either min_threshold (a percentage of all prunable weights) or min_weights "
                f"(an absolute count), not both (got min_threshold={mt}, min_weights={mw})"
            )
        patterns = self.keep_dense
        if isinstance(patterns, str):
            patterns = (patterns,)
        try:
            patterns = tuple(patterns)
        except TypeError:
            raise ConfigError(
                f"keep_dense must be a sequence of layer-name patterns, got {self.keep_dense!r}"
            ) from None
        bad = [p for p in patterns if not isinstance(p, str) or not p]
        if bad:
            raise ConfigError(f"keep_dense patterns must be non-empty strings, got {bad!r}")
        object.__setattr__(self, "keep_dense", patterns)
        ms = self.max_sparsity
        if not _is_real(ms) or not math.isfinite(ms) or not 0.0 <= ms <= 1.0:
            raise ConfigError(f"max_sparsity (per-layer cap) must be a number in [0, 1], got {ms!r}")
        object.__setattr__(self, "max_sparsity", float(ms))

    # ------------------------------------------------------------------ queries
    @property
    def unconstrained(self) -> bool:
        """True when no limit applies (every layer may be pruned completely)."""
        return (
            not self.min_threshold and not self.min_weights and not self.keep_dense and self.max_sparsity >= 1.0
        )

    def describe(self) -> str:
        """Human-readable summary, used in error messages."""
        parts = []
        if self.min_threshold is not None:
            parts.append(f"min_threshold={self.min_threshold:g}%")
        if self.min_weights is not None:
            parts.append(f"min_weights={self.min_weights}")
        if self.keep_dense:
            parts.append(f"keep_dense={list(self.keep_dense)}")
        if self.max_sparsity < 1.0:
            parts.append(f"max_sparsity={self.max_sparsity:g}")
        return "constraints(" + ", ".join(parts) + ")" if parts else "no constraints"

    def min_kept(self, layers: Sequence[PrunableLayer]) -> int:
        """The MT floor: weights every (large enough) layer keeps; 0 without MT."""
        if self.min_weights is not None:
            return self.min_weights
        if self.min_threshold is not None:
            total = sum(layer.numel for layer in layers)
            return int(total * self.min_threshold / 100)  # truncation, as in the paper's reference code
        return 0

    def dense_layers(self, layers: Sequence[PrunableLayer]) -> list[str]:
        """Names matched by ``keep_dense``; raises PruningError for a pattern that matches no layer."""
        if not self.keep_dense:
            return []
        names = [layer.name for layer in layers]
        unmatched = [p for p in self.keep_dense if not any(fnmatch.fnmatchcase(n, p) for n in names)]
        if unmatched:
            raise PruningError(
                f"keep_dense pattern(s) {unmatched} match no prunable layer; layers: {', '.join(names)}"
            )
        return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in self.keep_dense)]

    @classmethod
    def from_config(cls, cfg: Any, *, min_threshold: float | None = None) -> Constraints:
        """Constraints of a ``constraints:`` config section (``purl.config.ConstraintsConfig``).

        ``min_threshold`` (a method's own Minimum Threshold, e.g. a ``global-mp+mt`` comparison entry)
        replaces the section's floor when given.
        """
        if min_threshold is not None:
            return cls(min_threshold=min_threshold, keep_dense=tuple(cfg.keep_dense), max_sparsity=cfg.max_sparsity)
        return cls(min_threshold=cfg.min_threshold, min_weights=cfg.min_weights, keep_dense=tuple(cfg.keep_dense),
                   max_sparsity=cfg.max_sparsity)

    def max_pruned(self, layers: Sequence[PrunableLayer]) -> dict[str, int]:
        """The most weights each layer may lose under these constraints (layer name -> count).

        A layer with no more weights than the MT floor stays dense (0), as in the reference code.
        """
        floor = self.min_kept(layers)
        dense = set(self.dense_layers(layers))
        out: dict[str, int] = {}
        for layer in layers:
            n = layer.numel
            if layer.name in dense:
                out[layer.name] = 0
                continue
            cap = max(0, n - floor)
            if self.max_sparsity < 1.0:
                cap = min(cap, floor_count(self.max_sparsity, n))
            out[layer.name] = cap
        return out

    def feasible_max_sparsity(self, layers: Sequence[PrunableLayer]) -> float:
        """The highest global sparsity reachable under these constraints."""
        total = sum(layer.numel for layer in layers)
        return sum(self.max_pruned(layers).values()) / total if total else 0.0

    def target_count(
        self,
        layers: Sequence[PrunableLayer],
        sparsity: float,
        max_pruned: Mapping[str, int] | None = None,
        rules: str | None = None,
    ) -> int:
        """Weights to prune for global ``sparsity``: ``round(sparsity * total)``.

        Raises :class:`PruningError` (saying the highest reachable sparsity) when the constraints,
        or the given per-layer ``max_pruned`` caps (described by ``rules`` in the message), make
        that count impossible.
        """
        total = sum(layer.numel for layer in layers)
        k = pruned_count(sparsity, total)
        caps = self.max_pruned(layers) if max_pruned is None else max_pruned
        reachable = sum(caps[layer.name] for layer in layers)
        if k > reachable:
            under = self.describe() + (f" and {rules}" if rules else "")
            raise PruningError(
                f"global sparsity {float(sparsity):g} ({k} of {total} weights) is not reachable under {under}: "
                f"at most {reachable / total:.6g} ({reachable} weights) can be pruned"
            )
        return k

    def check_counts(self, layers: Sequence[PrunableLayer], counts: Mapping[str, int]) -> None:
        """Raise PruningError if any per-layer pruned count breaks these constraints."""
        caps = self.max_pruned(layers)
        bad = [
            f"{layer.name}: {counts[layer.name]} > {caps[layer.name]}"
            for layer in layers
            if counts.get(layer.name, 0) > caps[layer.name]
        ]
        if bad:
            raise PruningError(f"pruned counts exceed what {self.describe()} allow: " + "; ".join(bad))
