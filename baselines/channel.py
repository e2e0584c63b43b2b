"""Channel-granularity allocators: how many channels each Torch-Pruning group keeps, for a FLOPs/params budget.

They work on a :class:`~purl.pruning.channels.ChannelGraph` and return a *keep plan*
``{group name: channels kept}`` for :func:`~purl.pruning.channels.prune_channels`. The budget is a
**keep ratio** of a cost metric: ``metric="flops"`` (Conv/Linear MACs per sample, PuRL's FLOPs) or
``metric="params"``; ``keep_ratio=0.5`` means "at most half of the dense model's MACs".

* ``global-mp``: Global Magnitude Pruning over channels. Every channel gets its group's norm
  score (:func:`~purl.pruning.channels.channel_scores`) **divided by the mean score of its group**, and
  channels are removed network-wide from the lowest normalised score up. Why normalise: raw norms are not
  comparable across layers. A filter's L1 norm grows with its fan-in (``in_channels * k * k`` terms), so a
  3x3 conv with 64 inputs has far larger norms than a 1x1 shortcut or the stem, and raw ranking would strip
  the small-fan-in layers first (and BN-scale norms depend on each layer's learned scale). Dividing by the
  group mean makes the score scale-free per layer (multiplying a layer's weights by any constant leaves its
  scores unchanged) while keeping the within-layer spread, so Global MP still prunes layers unevenly where
  their channels are unevenly important. The mean is used rather than the max so one outlier channel does
  not compress the rest of its layer towards 0.
* ``uniform``: every group loses the same fraction of its channels (up to one channel).
* ``erk``: Erdős–Rényi-Kernel over channel groups. A group keeps the fraction ``min(1, eps * e_g)`` of its
  channels, where ``e_g`` is RigL's ERK factor ``sum(shape) / prod(shape)`` of the group's producer layers
  (their mean for a residual group): thin layers and small kernels keep more, wide ones lose more, as ERK does
  for weights; ``eps`` is found by the same exact landing. Which channels go is decided by the norm.
* ``lamp``: LAMP (Lee et al. 2021) over channels. A channel's score is its squared norm score divided by the
  sum of the squared scores of the channels of its group that are at least as important (LAMP's
  normalisation of weights, applied to a group's channels), and channels are removed network-wide from the
  lowest score up. Like channel Global MP it is scale-free per group; unlike it, it never empties a group.

All honour :class:`ChannelConstraints`: the Minimum Threshold expressed in channels (``min_channels``,
every group keeps at least that many, a smaller group is left whole), ``keep_dense`` patterns of group
names that are never pruned, and ``multiple`` (``prune.channel_multiple``): a pruned group keeps a multiple of
that many channels, so the slimmed layers have widths vectorised kernels run well (irregular widths run
slower at the same FLOPs, docs/RESULTS.md section 6). Channels are then removed in *steps* between two
allowed keep counts (one channel when ``multiple`` is 1).

**Exactness.** Channels are discrete, so a cost target cannot be hit exactly. Every allocator removes
channels one step at a time in their order and stop at the first plan whose cost is ``<= target`` (binary
search on the exact analytic cost, :meth:`ChannelGraph.macs`/:meth:`ChannelGraph.params`). The result is
therefore never above the target and below it by less than the cost of the last step, which is at most
:func:`channel_tolerance` (the largest cost any single step carries in the dense model). A target below
what the constraints allow raises :class:`~purl.errors.PruningError` naming the reachable minimum.

Each is the channel form of the weight allocator of the same name, reached through that allocator's class
(:meth:`baselines.base.Allocator.keep_channels`; the class declares ``granularities = ("weight", "channel")``):
``purl prune --method global-mp prune.granularity=channel`` runs channel Global MP. ``random`` has uniform's
counts and draws the channels it removes (:func:`random_removal`); ``layerwise`` applies a {group: fraction
removed} map (:func:`channel_layerwise`). ``uniform-plus`` has no channel form: asking for one raises
PruningError naming the allocators that have one. The names ``channel-global-mp`` and ``channel-uniform``
still work as deprecated aliases (a one-line notice says which name to use).
"""

from __future__ import annotations

import fnmatch
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any

import torch

from purl.errors import PruningError
from purl.progress import write
from purl.pruning.channels import NORMS, ChannelGraph, ChannelGroup, channel_scores, segment_scores

if TYPE_CHECKING:
    from purl.baselines.base import Allocator
    from purl.config import ExperimentConfig

__all__ = [
    "DEPRECATED_ALIASES",
    "METRICS",
    "ChannelConstraints",
    "channel_allocators",
    "channel_cost",
    "channel_erk",
    "channel_global_mp",
    "channel_lamp",
    "channel_layerwise",
    "channel_tolerance",
    "channel_uniform",
    "get_channel_allocator",
    "keep_for_ratio",
    "list_channel_allocators",
    "no_channel_form",
    "random_removal",
]

METRICS: tuple[str, ...] = ("flops", "params")


@dataclass(frozen=True)
class ChannelConstraints:
    """Per-group limits: ``min_channels`` kept at least (Minimum Threshold in channels), ``keep_dense`` groups,
    and ``multiple``: a pruned group keeps a multiple of this many channels (8 or 16 suit vectorised kernels;
    1 = any count)."""

    min_channels: int = 1
    keep_dense: tuple[str, ...] = ()
    multiple: int = 1

    def __post_init__(self) -> None:
        for name in ("min_channels", "multiple"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
                what = "the Minimum Threshold in channels" if name == "min_channels" else "kept channels' multiple"
                raise PruningError(f"{name} ({what}) must be an integer >= 1, got {value!r}")
        if isinstance(self.keep_dense, str):
            object.__setattr__(self, "keep_dense", (self.keep_dense,))

    @classmethod
    def from_config(cls, config: ExperimentConfig) -> ChannelConstraints:
        """``prune.min_channels`` (MT in channels), ``constraints.keep_dense`` groups, ``prune.channel_multiple``:
        the one reading of the config's channel limits (baselines, the env's wall and its prior)."""
        return cls(min_channels=config.prune.min_channels, keep_dense=tuple(config.constraints.keep_dense),
                   multiple=config.prune.channel_multiple)

    def removals(self, group: ChannelGroup) -> list[int]:
        """The channel counts ``group`` may lose, increasing (0 excluded): the group keeps its full size or a
        multiple of ``multiple`` (and of the group's ``grouping``, set by grouped convolutions) that is at least
        ``min_channels`` (and at least one channel)."""
        if any(fnmatch.fnmatchcase(group.name, p) for p in self.keep_dense):
            return []
        step = math.lcm(self.multiple, group.grouping)  # grouped convolutions: every segment keeps the same
        keeps = [k for k in range(step, group.size, step) if k >= self.min_channels]
        return sorted(group.size - k for k in keeps)


def channel_cost(graph: ChannelGraph, keep: Mapping[str, int], metric: str = "flops") -> int:
    """Exact cost of a keep plan: Conv/Linear MACs per sample (``"flops"``) or parameters (``"params"``)."""
    _check_metric(metric)
    return graph.macs(keep) if metric == "flops" else graph.params(keep)


def _dense_cost(graph: ChannelGraph, metric: str) -> int:
    return graph.dense_macs if metric == "flops" else graph.dense_params


def channel_tolerance(graph: ChannelGraph, metric: str = "flops", constraints: ChannelConstraints | None = None) -> int:
    """Largest cost one removal step saves from the dense model: the allocators' landing tolerance.

    A step is one channel, or with ``constraints.multiple`` > 1 the channels between two allowed keep counts.
    Removing channels saves less once coupled groups have shrunk (costs are bilinear in the kept
    fractions), so this dense-model maximum bounds every later step too.
    """
    dense = _dense_cost(graph, metric)
    full = {g.name: g.size for g in graph.groups}
    worst = 0
    for group in graph.groups:
        removals = (constraints or ChannelConstraints()).removals(group)
        steps = [b - a for a, b in zip([0, *removals], removals, strict=False)]
        if steps and group.size > max(steps):
            worst = max(worst, dense - channel_cost(graph, {**full, group.name: group.size - max(steps)}, metric))
    return worst


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise PruningError(f"unknown budget metric '{metric}'; allowed: {', '.join(METRICS)}")


def _check_ratio(keep_ratio: float, metric: str) -> float:
    if isinstance(keep_ratio, bool) or not isinstance(keep_ratio, Real) or not 0.0 < float(keep_ratio) <= 1.0:
        raise PruningError(
            f"{metric} keep ratio must be a number in (0, 1] (the fraction of the dense {metric} kept), "
            f"got {keep_ratio!r}"
        )
    return float(keep_ratio)


def _land(
    graph: ChannelGraph,
    order: Sequence[tuple[str, int]],
    keep_ratio: float,
    metric: str,
    constraints: ChannelConstraints,
    method: str,
) -> dict[str, int]:
    """Remove channels in ``order`` (``(group name, channels)`` per step) until the cost first drops to the target."""
    _check_metric(metric)
    ratio = _check_ratio(keep_ratio, metric)
    dense = _dense_cost(graph, metric)
    target = ratio * dense
    sizes = {g.name: g.size for g in graph.groups}

    def plan(k: int) -> dict[str, int]:
        keep = dict(sizes)
        for name, step in order[:k]:
            keep[name] -= step
        return keep

    lo, hi = 0, len(order)
    floor_cost = channel_cost(graph, plan(hi), metric)
    if floor_cost > target + 1e-9:
        raise PruningError(
            f"{method}: a {metric} keep ratio of {ratio:g} is below what the constraints allow "
            f"(at least {floor_cost / dense:.4f} of the dense {metric} with min_channels={constraints.min_channels}"
            f"{', keep_dense=' + ','.join(constraints.keep_dense) if constraints.keep_dense else ''}); "
            f"raise the ratio or lower min_channels"
        )
    while lo < hi:  # smallest k whose cost is <= target (cost is non-increasing in k)
        mid = (lo + hi) // 2
        if channel_cost(graph, plan(mid), metric) <= target + 1e-9:
            hi = mid
        else:
            lo = mid + 1
    return plan(lo)


def _ranked_steps(graph: ChannelGraph, constraints: ChannelConstraints,
                  channel_order: Callable[[ChannelGroup], list[float]]) -> list[tuple[str, int]]:
    """Every group's allowed removal steps, merged network-wide by ``channel_order``: the score of each of the
    group's channels, increasing (channels go lowest first; a step is scored by the last channel it removes, so
    a group's steps stay in order)."""
    entries: list[tuple[float, int, int, str, int]] = []
    for gi, group in enumerate(graph.groups):
        removals = constraints.removals(group)
        if not removals:
            continue
        ranked = channel_order(group)
        for j, (before, after) in enumerate(zip([0, *removals], removals, strict=False)):
            entries.append((ranked[after - 1], gi, j, group.name, after - before))
    entries.sort(key=lambda e: (e[0], e[1], e[2]))
    return [(e[3], e[4]) for e in entries]


def _proportional_steps(graph: ChannelGraph, constraints: ChannelConstraints,
                        scale: Callable[[ChannelGroup], float]) -> list[tuple[str, int]]:
    """Removal steps for "group ``g`` keeps ``min(1, eps * scale(g))`` of its channels" as ``eps`` falls: a step to
    ``k`` kept channels comes when ``eps`` drops below ``k / (size * scale)``, so steps are merged by that value,
    largest first (``scale`` 1 everywhere: every group loses the same fraction)."""
    entries: list[tuple[float, int, str, int]] = []
    for gi, group in enumerate(graph.groups):
        removals = constraints.removals(group)
        factor = scale(group)
        for before, after in zip([0, *removals], removals, strict=False):
            entries.append((-((group.size - after) / group.size) / factor, gi, group.name, after - before))
    entries.sort(key=lambda e: (e[0], e[1]))
    return [(e[2], e[3]) for e in entries]


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise PruningError(f"unknown channel norm '{norm}'; allowed: {', '.join(NORMS)}")


def channel_global_mp(
    graph: ChannelGraph,
    keep_ratio: float,
    *,
    metric: str = "flops",
    norm: str = "l1",
    constraints: ChannelConstraints | None = None,
) -> dict[str, int]:
    """Channel Global MP: remove the channels of lowest group-mean-normalised ``norm`` until the budget holds."""
    constraints = constraints or ChannelConstraints()
    _check_norm(norm)

    def normalised(group: ChannelGroup) -> list[float]:
        scores = segment_scores(group, channel_scores(group, norm))  # grouped convs: whole offsets
        mean = float(scores.mean())
        return sorted(float(s) for s in (scores / mean if mean > 0 else torch.zeros_like(scores)))

    return _land(graph, _ranked_steps(graph, constraints, normalised), keep_ratio, metric, constraints, "global-mp")


def channel_lamp(
    graph: ChannelGraph,
    keep_ratio: float,
    *,
    metric: str = "flops",
    norm: str = "l1",
    constraints: ChannelConstraints | None = None,
) -> dict[str, int]:
    """Channel LAMP: remove the channels of lowest LAMP score (squared ``norm`` score over the group's rest) first."""
    constraints = constraints or ChannelConstraints()
    _check_norm(norm)

    def lamp(group: ChannelGroup) -> list[float]:
        squared = segment_scores(group, channel_scores(group, norm)).double().pow(2).sort().values
        rest = squared.flip(0).cumsum(0).flip(0)  # sum of the scores at least as large as each
        scores = torch.where(rest > 0, squared / rest, torch.zeros_like(squared))
        return [float(v) for v in torch.cummax(scores, 0).values]  # non-decreasing (exactly, despite rounding)

    return _land(graph, _ranked_steps(graph, constraints, lamp), keep_ratio, metric, constraints, "lamp")


def channel_erk(
    graph: ChannelGraph,
    keep_ratio: float,
    *,
    metric: str = "flops",
    norm: str = "l1",
    constraints: ChannelConstraints | None = None,
    power_scale: float = 1.0,
) -> dict[str, int]:
    """Channel ERK: a group keeps a fraction of its channels proportional to its producers' ERK factor
    (raised to ``power_scale``, as the weight form's option)."""
    from purl.baselines.erk import erk_raw_density

    del norm  # which channels go is decided by prune_channels
    constraints = constraints or ChannelConstraints()

    def factor(group: ChannelGroup) -> float:
        shapes = [tuple(group.modules[name].weight.shape) for name in group.producers]
        return sum(erk_raw_density(shape, power_scale) for shape in shapes) / len(shapes) if shapes else 1.0

    return _land(graph, _proportional_steps(graph, constraints, factor), keep_ratio, metric, constraints, "erk")


def channel_uniform(
    graph: ChannelGraph,
    keep_ratio: float,
    *,
    metric: str = "flops",
    norm: str = "l1",
    constraints: ChannelConstraints | None = None,
) -> dict[str, int]:
    """Uniform channel pruning: every group loses the same fraction of its channels (within one step).

    Removals are interleaved by the fraction each group would keep after its step, so at every point all
    groups' removed fractions differ by less than one step (one channel, or ``constraints.multiple``
    channels). ``norm`` is unused here (which channels go is decided by
    :func:`~purl.pruning.channels.prune_channels`).
    """
    del norm
    constraints = constraints or ChannelConstraints()
    return _land(graph, _proportional_steps(graph, constraints, lambda group: 1.0), keep_ratio, metric, constraints,
                 "uniform")


def keep_for_ratio(
    graph: ChannelGraph,
    keep_ratio: float,
    *,
    metric: str = "flops",
    method: str = "uniform",
    norm: str = "l1",
    constraints: ChannelConstraints | None = None,
) -> dict[str, int]:
    """Turn a FLOPs (or params) keep ratio into channel counts per group with allocator ``method``'s channel form."""
    return get_channel_allocator(method).keep_channels(graph, keep_ratio, metric=metric, norm=norm,
                                                       constraints=constraints)


#: the old channel-only names, still accepted at channel granularity (a one-line notice names the new one)
DEPRECATED_ALIASES: dict[str, str] = {"channel-global-mp": "global-mp", "channel-uniform": "uniform"}
_NOTIFIED: set[str] = set()


def channel_allocator_name(name: str) -> str:
    """The registered channel allocator ``name`` stands for: itself, or the name a deprecated alias stands for
    (said once per process on stderr)."""
    canonical = DEPRECATED_ALIASES.get(name)
    if canonical is None:
        return name
    if name not in _NOTIFIED:
        _NOTIFIED.add(name)
        write(f"note: method '{name}' is deprecated; use '{canonical}' with prune.granularity=channel "
              "(the same allocator)", file=sys.stderr)
    return canonical


def channel_allocators() -> tuple[str, ...]:
    """The registered allocators with a channel form (those whose class declares the ``"channel"`` granularity)."""
    from purl.baselines.base import ALLOCATORS

    return tuple(name for name in ALLOCATORS.names() if "channel" in getattr(ALLOCATORS.get(name), "granularities", ()))


def no_channel_form(name: str, granularities: Sequence[str]) -> PruningError:
    """The one error for an allocator without a channel form, naming those that have one."""
    return PruningError(f"allocator '{name}' has no channel version (it declares granularities "
                        f"{', '.join(granularities)}); channel allocators: {', '.join(channel_allocators())}")


def list_channel_allocators() -> dict[str, str]:
    """Channel allocator name -> one-line description (the first line of its class docstring)."""
    from purl.baselines.base import list_allocators

    described = list_allocators()
    return {name: f"{described[name]} (prune.granularity=channel)" for name in channel_allocators()}


def get_channel_allocator(name: str, **kwargs: Any) -> Allocator:
    """The allocator ``name`` with options ``kwargs``, checked to have a channel form (a deprecated alias works,
    with a notice); one without raises PruningError naming those that have one."""
    from purl.baselines.base import get_allocator

    allocator = get_allocator(channel_allocator_name(name) if isinstance(name, str) else name, **kwargs)
    if "channel" not in allocator.granularities:
        raise no_channel_form(allocator.name or type(allocator).__name__, allocator.granularities)
    return allocator


# ------------------------------------------------------------------ random and layerwise channel forms
def random_removal(graph: ChannelGraph, keep: Mapping[str, int], generator: torch.Generator | None = None,
                   ) -> dict[str, list[int]]:
    """Channel indices each group loses under ``keep``, drawn uniformly at random (``generator`` seeds it).

    A grouped group (``grouping`` > 1) loses whole offsets, the same one in every segment, as the norm order does."""
    full = graph.check_keep(keep)
    plan: dict[str, list[int]] = {}
    for group in graph.groups:
        drop = group.size - full[group.name]
        if drop <= 0:
            continue
        segment = group.size // group.grouping
        offsets = torch.randperm(segment, generator=generator).tolist()
        order = [seg * segment + offset for offset in offsets for seg in range(group.grouping)]
        plan[group.name] = sorted(order[:drop])
    return plan


def channel_layerwise(
    graph: ChannelGraph,
    keep_ratio: float | None,
    *,
    metric: str = "flops",
    norm: str = "l1",
    constraints: ChannelConstraints | None = None,
    fractions: Mapping[str, float],
    rescale: bool = False,
) -> dict[str, int]:
    """Channel layerwise: group ``g`` loses the fraction ``fractions[g]`` of its channels (groups not named stay
    whole), rounded down to what the constraints allow.

    Without ``rescale`` (or with ``keep_ratio=None``) the map is applied as given: its cost is the target. With
    ``rescale`` the map is a profile: every fraction is scaled by one factor, and the channels go in the order that
    factor reaches them, until ``keep_ratio`` of the dense ``metric`` remains (the same landing as the other channel
    allocators). ``norm`` is unused here (which channels go is decided by the norm order).
    """
    del norm
    constraints = constraints or ChannelConstraints()
    if not rescale:
        keep_ratio = None
    groups = {g.name: g for g in graph.groups}
    unknown = sorted(set(fractions) - set(groups))
    if unknown:
        raise PruningError(f"layerwise fractions name unknown channel group(s) {', '.join(unknown)}; groups: "
                           f"{', '.join(groups)}")
    if keep_ratio is None:
        plan = {name: g.size for name, g in groups.items()}
        for name, fraction in fractions.items():
            allowed = [r for r in constraints.removals(groups[name]) if r <= fraction * groups[name].size + 1e-9]
            plan[name] -= max(allowed, default=0)
        return plan
    entries: list[tuple[float, int, str, int]] = []
    for gi, group in enumerate(graph.groups):
        wanted = fractions.get(group.name, 0.0) * group.size
        removals = constraints.removals(group) if wanted > 0 else []
        for before, after in zip([0, *removals], removals, strict=False):
            entries.append((after / wanted, gi, group.name, after - before))  # the scale factor that reaches it
    entries.sort(key=lambda e: (e[0], e[1]))
    return _land(graph, [(e[2], e[3]) for e in entries], keep_ratio, metric, constraints, "layerwise")
