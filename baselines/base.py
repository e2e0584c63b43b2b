"""The one allocator interface of the pruning baselines, and their registry.

An :class:`Allocator` decides *how many* weights each prunable layer loses for a global
sparsity target (:meth:`Allocator.allocate`, exact integer counts), and *which* ones
(:meth:`Allocator.select`, by magnitude within each layer unless overridden, e.g. by random
pruning). :meth:`Allocator.prune` installs the result into a :class:`~purl.pruning.masks.MaskState`;
:meth:`Allocator.prune_model` zeroes a model's weights in place without one.

Exactness contract: the counts sum to exactly ``round(sparsity * total)`` (``total`` = weights of
the layers being pruned), every layer honours the :class:`~purl.pruning.constraints.Constraints`,
and rounding remainders are distributed deterministically (largest remainder, ties by layer
order). A target the constraints cannot reach raises :class:`~purl.errors.PruningError`.

Adding an allocator is one class plus one registry line::

    @register_allocator("my-method")
    class MyMethod(Allocator):
        \"\"\"One-line description (shown by list_allocators()).\"\"\"
        def allocate(self, layers, sparsity, constraints=Constraints(), *, generator=None):
            ...

One allocator family serves every granularity. ``granularities`` declares the forms a class has:
``"weight"`` (:meth:`Allocator.allocate` / :meth:`Allocator.select`) and ``"channel"`` when it also
implements :meth:`Allocator.keep_channels` (how many channels each coupled Torch-Pruning group keeps,
usually one call of a helper of :mod:`baselines.channel`) and, optionally, :meth:`Allocator.drop_channels`
(which ones go; by default the lowest-norm channels). The one validation reads the declaration, so
``--method <name> prune.granularity=channel``, ``env.prior`` and ``purl list methods`` find a channel form
with nothing else to register.
"""

from __future__ import annotations

import fnmatch
import inspect
import os
import sys
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

from purl.errors import ConfigError, PruningError, RegistryError
from purl.numerics import first_non_finite
from purl.pruning.constraints import Constraints
from purl.pruning.layers import PrunableLayer, find_prunable_layers
from purl.pruning.masks import MaskState, magnitude_mask
from purl.registry import Registry

if TYPE_CHECKING:
    from purl.baselines.channel import ChannelConstraints
    from purl.pruning.channels import ChannelGraph

__all__ = [
    "ALLOCATORS",
    "Allocator",
    "LayerCollapseWarning",
    "PruningResult",
    "check_finite_weights",
    "collapsed_layers",
    "filter_layers",
    "get_allocator",
    "list_allocators",
    "register_allocator",
]

class LayerCollapseWarning(UserWarning):
    """Every weight of some layer was pruned: the network is disconnected there."""


def _package_dir(module: str) -> str | None:
    spec = sys.modules.get(module)
    path = getattr(spec, "__file__", None)
    return os.path.dirname(os.path.abspath(path)) + os.sep if path else None


#: Frames in these directories are library internals, never "the user's call" of a warning.
_INTERNAL_DIRS: tuple[str, ...] = tuple(
    d for d in (_package_dir(__package__ or "purl.baselines"), _package_dir("purl"), _package_dir("torch")) if d
)


def user_stacklevel(internal: Sequence[str] = _INTERNAL_DIRS) -> int:
    """``stacklevel`` for a ``warnings.warn`` issued by the caller that points at the user's call site.

    Walks out of frames whose file lies under ``internal`` (this package, ``purl`` and ``torch``: the
    ``torch.no_grad`` decorator adds ``torch/utils/_contextlib.py`` frames, so a fixed ``stacklevel``
    lands there). Python < 3.12 has no ``warnings.warn(skip_file_prefixes=...)``, hence the walk. When
    every frame is internal (e.g. the ``purl`` CLI), the outermost one is used.
    """
    prefixes = tuple(internal)
    frame = sys._getframe(1)  # the function that calls warnings.warn: stacklevel 1
    level = 1
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(prefixes):
        frame = frame.f_back
        level += 1
    return level


def filter_layers(
    layers: Sequence[PrunableLayer], include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> list[PrunableLayer]:
    """Keep the layers matching ``include`` (all if empty) and not ``exclude`` (fnmatch on names)."""
    out = [
        layer
        for layer in layers
        if (not include or any(fnmatch.fnmatchcase(layer.name, p) for p in include))
        and not any(fnmatch.fnmatchcase(layer.name, p) for p in exclude)
    ]
    if not out:
        raise PruningError(f"no prunable layer left after include={list(include)} exclude={list(exclude)}")
    return out


def check_finite_weights(layers: Sequence[PrunableLayer], allocator: str = "") -> None:
    """Refuse layers holding a NaN or inf weight: one PruningError naming the first such layer.

    Magnitudes (and every allocation made from them) are meaningless there, so every allocator checks once
    before allocating (:meth:`Allocator.apply`, and Global MP's fast path)."""
    bad = first_non_finite((layer.name, layer.weight) for layer in layers)
    if bad is not None:
        where = f"{allocator}: " if allocator else ""
        raise PruningError(f"{where}layer '{bad.name}' has {bad.count} non-finite weight(s) (NaN or inf) of "
                           f"{bad.numel}; prune only a finite model (a diverged training run or a damaged "
                           "checkpoint: retrain it)")


def collapsed_layers(counts: Mapping[str, int], layers: Sequence[PrunableLayer]) -> list[str]:
    """Names of the (non-empty) layers whose every weight is pruned according to ``counts``."""
    return [layer.name for layer in layers if layer.numel > 0 and counts.get(layer.name, 0) >= layer.numel]


class PruningResult(dict):  # type: ignore[type-arg]
    """Per-layer sparsity (name -> fraction pruned), plus ``counts``, ``numels``, ``collapsed`` and ``info``.

    It is a plain ``dict[str, float]`` for callers that only want the sparsities.
    """

    def __init__(
        self,
        counts: Mapping[str, int],
        numels: Mapping[str, int],
        collapsed: Sequence[str] = (),
        info: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__({name: (counts[name] / n if n else 0.0) for name, n in numels.items()})
        self.counts: dict[str, int] = dict(counts)
        self.numels: dict[str, int] = dict(numels)
        self.collapsed: list[str] = list(collapsed)
        self.info: dict[str, Any] = dict(info or {})

    @property
    def pruned(self) -> int:
        return sum(self.counts.values())

    @property
    def total(self) -> int:
        return sum(self.numels.values())

    @property
    def global_sparsity(self) -> float:
        return self.pruned / self.total if self.total else 0.0


class Allocator(ABC):
    """Base class of all pruning baselines (see the module docstring)."""

    name: ClassVar[str] = ""
    #: True when the allocator defines its own target and accepts ``sparsity=None``.
    accepts_no_target: ClassVar[bool] = False
    #: the granularities this allocator has a form at: "weight", and "channel" when it implements
    #: :meth:`keep_channels` (the one validation, ``env.prior`` and ``purl list methods`` read it)
    granularities: ClassVar[tuple[str, ...]] = ("weight",)
    #: the channel form's helper in :mod:`baselines.channel` (``fn(graph, keep_ratio, *, metric, norm, constraints,
    #: **channel_options()) -> keep plan``), called by :meth:`keep_channels`; None: no channel form
    channel_form: ClassVar[Callable[..., dict[str, int]] | None] = None

    # --------------------------------------------------------------- to override
    @abstractmethod
    def allocate(
        self,
        layers: Sequence[PrunableLayer],
        sparsity: float | None,
        constraints: Constraints = Constraints(),
        *,
        generator: torch.Generator | None = None,
    ) -> dict[str, int]:
        """Exact pruned count per layer, summing to ``round(sparsity * total)`` under ``constraints``."""

    def select(
        self,
        layers: Sequence[PrunableLayer],
        counts: Mapping[str, int],
        *,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Boolean keep-masks pruning exactly ``counts[name]`` weights: the smallest ``|w|`` of each layer."""
        return {layer.name: magnitude_mask(layer.weight, counts[layer.name]) for layer in layers}

    # ------------------------------------------------- the channel form (granularity "channel")
    def keep_channels(
        self,
        graph: ChannelGraph,
        keep_ratio: float | None,
        *,
        metric: str = "flops",
        norm: str = "l1",
        constraints: ChannelConstraints | None = None,
    ) -> dict[str, int]:
        """Channels each group of ``graph`` keeps so that ``keep_ratio`` of the dense ``metric`` (``flops`` or
        ``params``) remains: never above it, below it by less than one step's cost (:mod:`baselines.channel`).
        ``keep_ratio=None`` only for an allocator that defines its own target (a map applied as given)."""
        form = type(self).channel_form
        if form is None or "channel" not in self.granularities:
            from purl.baselines.channel import no_channel_form

            raise no_channel_form(self.name or type(self).__name__, self.granularities)
        return form(graph, keep_ratio, metric=metric, norm=norm, constraints=constraints, **self.channel_options())

    def channel_options(self) -> dict[str, Any]:
        """The allocator's own options its channel form takes too (ERK's ``power_scale``); none by default."""
        return {}

    def drop_channels(
        self,
        graph: ChannelGraph,
        keep: Mapping[str, int],
        *,
        norm: str = "l1",
        generator: torch.Generator | None = None,
    ) -> dict[str, list[int]]:
        """Channel indices each group loses under the keep plan ``keep``: its lowest-``norm`` channels
        (:meth:`~purl.pruning.channels.ChannelGraph.removed`); random pruning draws them instead."""
        del generator  # the norm order is deterministic
        return graph.removed(keep, norm)

    # ------------------------------------------------------------------ helpers
    def target(
        self,
        layers: Sequence[PrunableLayer],
        sparsity: float | None,
        constraints: Constraints,
        max_pruned: Mapping[str, int] | None = None,
        rules: str | None = None,
    ) -> int:
        """``round(sparsity * total)``, validated against the constraints (or explicit caps, described by ``rules``)."""
        if sparsity is None:
            raise PruningError(f"allocator '{self.name}' needs a global target sparsity, got None")
        return constraints.target_count(layers, sparsity, max_pruned, rules)

    # -------------------------------------------------------------- application
    def apply(
        self,
        layers: Sequence[PrunableLayer],
        sparsity: float | None,
        constraints: Constraints = Constraints(),
        *,
        masks: MaskState | None = None,
        generator: torch.Generator | None = None,
    ) -> PruningResult:
        """Prune ``layers``: install keep-masks in ``masks``, or (``masks=None``) zero the weights in place."""
        layers = list(layers)
        check_finite_weights(layers, self.name or type(self).__name__)
        counts = self.allocate(layers, sparsity, constraints, generator=generator)
        self.check_counts(layers, sparsity, constraints, counts)
        keep = self.select(layers, counts, generator=generator)
        with torch.no_grad():
            for layer in layers:
                mask = keep[layer.name]
                if masks is not None:
                    masks.set_mask(layer.name, mask)
                elif counts[layer.name]:
                    layer.weight.masked_fill_(~mask.to(layer.weight.device), 0)
        return self.result(layers, counts)

    def prune(
        self,
        masks: MaskState,
        sparsity: float | None,
        constraints: Constraints = Constraints(),
        *,
        generator: torch.Generator | None = None,
    ) -> PruningResult:
        """Recompute and install the masks of every layer of ``masks`` at global ``sparsity``."""
        return self.apply(masks.layers, sparsity, constraints, masks=masks, generator=generator)

    def prune_model(
        self,
        model: nn.Module,
        sparsity: float | None,
        constraints: Constraints = Constraints(),
        *,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        generator: torch.Generator | None = None,
    ) -> PruningResult:
        """Zero the pruned weights of ``model`` in place (no MaskState); return per-layer sparsities."""
        layers = find_prunable_layers(model, include, exclude)
        return self.apply(layers, sparsity, constraints, generator=generator)

    def check_counts(
        self,
        layers: Sequence[PrunableLayer],
        sparsity: float | None,
        constraints: Constraints,
        counts: Mapping[str, int],
    ) -> None:
        """Validate an allocation (guards user-supplied allocators): names, ranges, constraints, total."""
        names = {layer.name for layer in layers}
        if set(counts) != names:
            raise PruningError(
                f"allocator '{self.name}' returned counts for {sorted(set(counts) ^ names)} "
                "which do not match the prunable layers"
            )
        for layer in layers:
            c = counts[layer.name]
            if not 0 <= c <= layer.numel:
                raise PruningError(f"allocator '{self.name}' prunes {c} of {layer.numel} weights of '{layer.name}'")
        constraints.check_counts(layers, counts)
        if sparsity is not None:
            want = constraints.target_count(layers, sparsity)
            got = sum(counts.values())
            if got != want:
                raise PruningError(f"allocator '{self.name}' pruned {got} weights instead of {want}")

    def result(
        self, layers: Sequence[PrunableLayer], counts: Mapping[str, int], info: Mapping[str, Any] | None = None
    ) -> PruningResult:
        """Build the :class:`PruningResult`, warning (once) if any layer collapsed."""
        collapsed = collapsed_layers(counts, layers)
        if collapsed:
            shown = ", ".join(collapsed[:10]) + (f" and {len(collapsed) - 10} more" if len(collapsed) > 10 else "")
            warnings.warn(
                f"{self.name or type(self).__name__}: every weight of {len(collapsed)} layer(s) was pruned "
                f"(layer collapse, the network is disconnected): {shown}. "
                "Use a Minimum Threshold (min_threshold) or a lower sparsity to avoid it.",
                LayerCollapseWarning,
                stacklevel=user_stacklevel(),
            )
        return PruningResult(counts, {layer.name: layer.numel for layer in layers}, collapsed, info)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# ------------------------------------------------------------------------------------- registry
ALLOCATORS: Registry[type[Allocator]] = Registry("allocator")

A = TypeVar("A", bound=type[Allocator])


def register_allocator(name: str, help: str | None = None) -> Callable[[A], A]:
    """Class decorator: set ``cls.name = name`` and register the class in :data:`ALLOCATORS`."""

    def decorator(cls: A) -> A:
        cls.name = name
        return ALLOCATORS.register(name, help)(cls)

    return decorator


def get_allocator(name: str | Allocator, **kwargs: Any) -> Allocator:
    """Instantiate the allocator registered as ``name`` (or ``package.module:Class``) with ``kwargs``.

    An :class:`Allocator` instance is returned as is (``kwargs`` must then be empty).
    """
    if isinstance(name, Allocator):
        if kwargs:
            raise ConfigError(f"options {sorted(kwargs)} given for an allocator instance {name!r}")
        return name
    obj = ALLOCATORS.get(name)
    if isinstance(obj, Allocator):
        if kwargs:
            raise ConfigError(f"options {sorted(kwargs)} given for allocator instance '{name}'")
        return obj
    if not (isinstance(obj, type) and issubclass(obj, Allocator)):
        raise RegistryError(f"'{name}' is not an Allocator subclass (got {obj!r})")
    signature = inspect.signature(obj)
    params = [p for p in signature.parameters if p not in ("self", "args", "kwargs")]
    open_ended = any(v.kind is v.VAR_KEYWORD for v in signature.parameters.values())
    unknown = [] if open_ended else sorted(set(kwargs) - set(params))
    required = [p for p, v in signature.parameters.items() if v.default is v.empty and p not in kwargs
                and v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY)]
    if required and not unknown:
        raise ConfigError(f"allocator '{name}' needs the option(s) {', '.join(required)} (prune.method_kwargs, or "
                          f"a compare.methods entry's kwargs); its options: {', '.join(params)}")
    try:
        signature.bind(**kwargs)
    except TypeError:
        raise ConfigError(
            f"allocator '{name}' does not accept options {sorted(kwargs)}; "
            f"its options: {', '.join(params) if params else '(none)'}"
        ) from None
    return obj(**kwargs)


def list_allocators() -> dict[str, str]:
    """Registered allocator names -> one-line description."""
    return ALLOCATORS.describe()
