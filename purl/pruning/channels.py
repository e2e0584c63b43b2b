"""Structured (channel) pruning: coupled channel groups, channel norms, physical slimming, masked twin.

Unstructured masks (:mod:`purl.pruning.masks`) never make a model faster on dense kernels. This module
removes whole output channels instead, so the result is a physically smaller network. The dependency
analysis and the removal itself are Torch-Pruning's (``torch_pruning.DependencyGraph``), not hand-written
graph code: a *channel group* is one Torch-Pruning pruning group, i.e. every output channel that must be
removed together (a conv and its BatchNorm, all branches of a residual addition, a depthwise conv and
its producer, the channel slices of a concatenation) plus every consumer whose input channels go with them.

API (all names are module names of the model, as in ``model.named_modules()``):

* :func:`channel_graph` / :func:`channel_groups`: the prunable groups of a model for an example input.
  The classifier's output layer (the conv/linear layer whose output is the model's output) is always
  excluded (its outputs are the classes; its inputs may shrink), as are groups touching ``ignored_layers``
  (names or :mod:`fnmatch` patterns) on either side: an ignored layer keeps its whole weight tensor.
* :func:`channel_scores`: per-channel importance of a group, ``"l1"`` (default), ``"l2"`` or ``"bn"``.
* :func:`prune_channels`: a deep copy with the lowest-scoring channels of each group physically removed.
* :func:`mask_channels`: the same decision as structured zeros at the same shapes (the "masked twin").
  It zeroes the removed channels' filters, biases and BatchNorm affine parameters **and** the consumers'
  input-channel weights. The last part is what makes it equivalent: zeroing a conv's filter alone does
  not zero its channel after BatchNorm (eval BN maps 0 to ``beta - gamma * mean / sqrt(var + eps)``), and
  that constant would still reach the next layer, whereas the slimmed model has no such input at all.
* :func:`measure_model`: parameters and MACs re-measured from a (slimmed) model itself.
* :meth:`ChannelGraph.macs` / :meth:`ChannelGraph.params`: exact analytic cost of a keep-count plan
  without slimming (used by the channel allocators to hit FLOPs and parameter budgets).

MACs follow PuRL's convention (``docs/ARCHITECTURE.md``): multiply-accumulates of Conv/Linear layers for
one sample, ``weight.numel() * output positions``; normalisation, activations and pooling are not counted.

A *keep plan* is ``{group name: channels kept}``; groups not named keep all their channels. A group must
keep at least one channel (removing all of them disconnects the network): a keep count of 0, a count
above the group's size, an unknown group name or a removal fraction outside ``[0, 1)`` raises
:class:`~purl.errors.PruningError` with one line saying what is allowed.
"""

from __future__ import annotations

import copy
import fnmatch
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any

import torch
from torch import Tensor, nn

from purl.errors import PruningError

__all__ = [
    "NORMS",
    "ChannelGraph",
    "ChannelGroup",
    "ChannelLayer",
    "ModelCost",
    "channel_graph",
    "channel_groups",
    "channel_scores",
    "check_slimmable",
    "keep_from_fraction",
    "mask_channels",
    "measure_model",
    "prune_channels",
    "segment_scores",
    "zero_channels",
]

#: channel importance criteria accepted by :func:`channel_scores`
NORMS: tuple[str, ...] = ("l1", "l2", "bn")

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_COMPUTE = (*_CONV, nn.Linear)
_NORM_LAYERS = (nn.modules.batchnorm._BatchNorm,)
#: attention over image windows (torchvision's Swin, Swin V2 and MaxViT): Torch-Pruning's dependency grouping
#: of their partition reshapes does not finish (Swin-T: over 20 GB after minutes), so they are refused up front
_WINDOW_ATTENTION = ("ShiftedWindowAttention", "ShiftedWindowAttentionV2", "PartitionAttentionLayer")


def _tp() -> Any:
    """Import Torch-Pruning lazily, with an actionable error when it is missing."""
    try:
        import torch_pruning
    except ImportError as exc:  # pragma: no cover - it is a declared dependency
        raise PruningError(
            "channel pruning needs the 'torch-pruning' package; install it with: pip install torch-pruning"
        ) from exc
    return torch_pruning


@dataclass(frozen=True)
class ChannelGroup:
    """One Torch-Pruning group: channels that are removed together, and what they cost.

    ``producers`` are the conv/linear layers whose *output* channels are the group's channels (several
    for a residual addition), ``consumers`` the conv/linear layers whose *input* channels shrink with
    them, ``norms`` the BatchNorm layers in the group. ``macs`` is the dense MACs of every layer whose
    input or output channels belong to the group, ``macs_share`` that divided by the model's dense MACs
    (a layer between two groups counts in both, so shares sum to more than 1).

    ``grouping``: how many equal segments the channels fall into because a grouped convolution
    (``grouped_layers``; ResNeXt, RegNet) produces or consumes them. Each segment is one convolution
    group, so every segment must lose the same channel offsets: the group keeps a multiple of ``grouping``
    channels and loses channels ``grouping`` at a time (Torch-Pruning's grouped-conv rule).
    """

    name: str
    size: int
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    norms: tuple[str, ...]
    macs: int
    macs_share: float
    grouping: int = 1
    grouped_layers: tuple[str, ...] = ()
    modules: Mapping[str, nn.Module] = field(default_factory=dict, repr=False, compare=False)

    @property
    def layers(self) -> tuple[str, ...]:
        """Every named module the group touches (producers, BatchNorms, consumers)."""
        return (*self.producers, *self.norms, *self.consumers)


@dataclass(frozen=True)
class ChannelLayer:
    """A conv/linear layer's dense cost and the groups its output and input channels belong to.

    ``out_groups`` / ``in_groups`` map a group name to how many of this layer's output / input
    channels (input *features* for a linear layer after a flatten) the group governs; channels no
    group governs (the image channels, the classifier's outputs) never shrink.
    """

    name: str
    macs: int
    weight: int
    bias: int
    out_dim: int
    in_dim: int
    depthwise: bool
    out_groups: Mapping[str, int]
    in_groups: Mapping[str, int]


@dataclass(frozen=True)
class ModelCost:
    """Cost measured from a model itself: parameters, Conv/Linear MACs per sample, Torch-Pruning's ops."""

    params: int
    macs: int
    ops: float  # Torch-Pruning's count_ops_and_params total (also counts BatchNorm, pooling, ...)


def _set_eval(model: nn.Module) -> dict[nn.Module, bool]:
    modes = {m: m.training for m in model.modules()}
    model.eval()
    return modes


def _restore(modes: Mapping[nn.Module, bool]) -> None:
    for module, training in modes.items():
        module.training = training


def _as_tuple(example_inputs: Any) -> tuple[Any, ...]:
    return tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)


def _batch_size(example_inputs: Any) -> int:
    first = _as_tuple(example_inputs)[0]
    return int(first.shape[0]) if isinstance(first, Tensor) and first.dim() > 0 else 1


def _first_tensor(out: Any) -> Tensor | None:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    if isinstance(out, Mapping):
        return next((v for v in out.values() if isinstance(v, Tensor)), None)
    return None


def _dense_costs(model: nn.Module, example_inputs: Any) -> tuple[dict[str, int], str | None]:
    """Per-sample MACs of every Conv/Linear layer that runs, and the classifier's name.

    The classifier is the compute layer whose output tensor *is* the model's output; when the output is
    transformed after the last layer (e.g. a softmax), the last compute layer to run.
    """
    names = {m: n for n, m in model.named_modules()}
    macs: dict[str, int] = {}
    outputs: list[tuple[str, Any]] = []  # (layer, output), referenced until the model's output is matched
    batch = _batch_size(example_inputs)

    def hook(module: nn.Module, _inp: Any, out: Any) -> None:
        name = names[module]
        if isinstance(module, _CONV):
            positions = out[0, 0].numel()
        else:  # linear: one output row per leading position (a token axis, if any), per sample
            positions = max(out.numel() // max(batch * out.shape[-1], 1), 1) if out.dim() > 1 else 1
        macs[name] = macs.get(name, 0) + int(module.weight.numel() * positions)
        outputs.append((name, out))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _COMPUTE)]
    modes = _set_eval(model)
    try:
        with torch.no_grad():
            out = model(*_as_tuple(example_inputs))
    finally:
        _restore(modes)
        for h in handles:
            h.remove()
    final = _first_tensor(out)
    # by identity, not id(): a freed intermediate's id() can be reused by a later tensor, the model's output too
    classifier = next((name for name, output in reversed(outputs) if output is final), None)
    if classifier is None and outputs:
        classifier = outputs[-1][0]
    return macs, classifier


def _resolve_ignored(model: nn.Module, patterns: Sequence[str] | None) -> list[str]:
    if patterns is None:
        return []
    if isinstance(patterns, str):
        patterns = [patterns]
    names = [n for n, _ in model.named_modules() if n]
    chosen: list[str] = []
    for pattern in patterns:
        hits = [n for n in names if n == pattern or fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise PruningError(
                f"ignored layer '{pattern}' matches no module of the model; use module names or fnmatch "
                f"patterns such as 'layer3.*' (e.g. {', '.join(names[:4])}, ...)"
            )
        chosen.extend(h for h in hits if h not in chosen)
    return chosen


@dataclass
class _GroupParts:
    """What one Torch-Pruning group touches, read off its dependencies (see :meth:`ChannelGraph._read_group`)."""

    producers: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)
    norms: list[str] = field(default_factory=list)
    norm_channels: dict[str, int] = field(default_factory=dict)  # norm -> how many of its channels (concat slices)
    outs: dict[str, int] = field(default_factory=dict)
    ins: dict[str, int] = field(default_factory=dict)
    depthwise: set[str] = field(default_factory=set)
    grouped: dict[str, int] = field(default_factory=dict)  # grouped (not depthwise) conv -> its groups
    params: list[str] = field(default_factory=list)  # raw nn.Parameters sliced with the group (layer scales)


class ChannelGraph:
    """Torch-Pruning's dependency graph of one model, its prunable channel groups and their costs.

    Built by :func:`channel_graph`. It references ``model``'s own modules (no copy), so scores follow the
    model's current weights; slimming always works on a deep copy (:func:`prune_channels`).
    """

    def __init__(self, model: nn.Module, example_inputs: Any, ignored_layers: Sequence[str] | None = None) -> None:
        self.model = model
        self.example_inputs = example_inputs
        self._names = {m: n for n, m in model.named_modules()}
        self._param_names = {id(p): n for n, p in model.named_parameters()}
        modules = dict(model.named_modules())
        layer_macs, classifier = _dense_costs(model, example_inputs)
        self.classifier = classifier
        ignored = _resolve_ignored(model, ignored_layers)
        user_ignored = set(ignored) - {classifier}  # kept whole on both sides; the classifier: only its outputs
        if classifier is not None and classifier not in ignored:
            ignored.append(classifier)
        self.ignored_layers: tuple[str, ...] = tuple(ignored)
        raw = self._trace([modules[n] for n in ignored])
        self.dense_macs = int(sum(layer_macs.values()))
        self.dense_params = int(sum(p.numel() for p in model.parameters()))
        # other parameterised module (BatchNorm, ...) -> {group: its channels in that group}; after a concatenation
        # one BatchNorm spans several groups
        norm_groups: dict[str, dict[str, int]] = {}
        param_groups: dict[str, str] = {}  # raw parameter (qualified name) sliced with a group -> that group
        self._roots: dict[str, nn.Module] = {}
        parts: dict[str, _GroupParts] = {}
        groups: list[ChannelGroup] = []
        for group in raw:
            root = group[0].dep.target.module
            name = self._names[root]
            part = self._read_group(group)
            touched = set(part.producers) | set(part.consumers)
            if touched & user_ignored:
                continue  # an ignored layer would lose input channels: the whole group stays
            self._roots[name] = root
            parts[name] = part
            for mname, n in part.norm_channels.items():
                norm_groups.setdefault(mname, {})[name] = n
            for pname in part.params:
                param_groups[pname] = name
            groups.append(self._make_group(name, len(group[0].idxs), part, touched, layer_macs, modules))
        position = {n: i for i, n in enumerate(modules)}
        groups.sort(key=lambda g: position[g.name])  # model order: the stem's group first
        self.groups: list[ChannelGroup] = groups
        self._by_name = {g.name: g for g in groups}
        self.layers: dict[str, ChannelLayer] = self._make_layers(layer_macs, modules, parts)
        # what params() subtracts per removed channel, computed once (the allocators' binary search calls it often)
        self._norm_costs: list[tuple[float, dict[str, int]]] = []
        for mname, shares in norm_groups.items():
            own = list(modules[mname].parameters(recurse=False))
            channels = own[0].shape[0] if own[0].dim() else 1
            self._norm_costs.append((sum(p.numel() for p in own) / channels, shares))
        parameters = dict(model.named_parameters())
        self._param_costs = [(parameters[pname].numel(), group) for pname, group in param_groups.items()]

    # -- construction ------------------------------------------------------------------------------
    def _trace(self, ignored: list[nn.Module]) -> list[Any]:
        """Torch-Pruning's dependency graph and its pruning groups (ignored layers' outputs excluded)."""
        tp = _tp()
        window = next(((n, m) for n, m in self.model.named_modules() if type(m).__name__ in _WINDOW_ATTENTION), None)
        if window is not None:  # checked before tracing: Torch-Pruning's grouping of these would not end
            raise PruningError(
                f"Torch-Pruning cannot resolve the channel couplings of window attention ('{window[0]}', "
                f"{type(window[1]).__name__}: its grouping of the window partitions runs out of memory); prune "
                f"this model at prune.granularity=weight"
            )
        modes = _set_eval(self.model)  # tracing runs a forward: never update BatchNorm statistics
        try:
            with torch.enable_grad(), warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self.dg = tp.DependencyGraph().build_dependency(
                    self.model, example_inputs=self.example_inputs, verbose=False)
            if any("Maximum recursive depth" in str(w.message) for w in caught):
                raise PruningError(self._untraceable())  # grouping it would not end (Swin: >20 GB, hours)
            return list(self.dg.get_all_groups(ignored_layers=ignored))
        except PruningError:
            raise
        except Exception as exc:
            raise PruningError(
                f"Torch-Pruning cannot trace this model for channel pruning: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            _restore(modes)

    def _untraceable(self) -> str:
        """The refusal of a model whose channel shapes Torch-Pruning's shape inference gave up on."""
        attention = next((n for n, m in self.model.named_modules() if "Attention" in type(m).__name__), None)
        where = f" (first attention layer: '{attention}', {type(self.model.get_submodule(attention)).__name__})" \
            if attention else ""
        return ("Torch-Pruning cannot resolve the channel couplings of this model: its shape inference reached "
                f"its recursion limit{where}, as it does on window attention (Swin); prune it at "
                "prune.granularity=weight")

    def _read_group(self, group: Any) -> _GroupParts:
        """Sort one Torch-Pruning group's dependencies into producers, consumers, norms and grouped convs."""
        ops = _tp().ops
        part = _GroupParts()
        for dep, idxs in group:
            module = dep.target.module
            if isinstance(module, nn.Parameter):  # a raw parameter Torch-Pruning slices too (ConvNeXt's layer scale)
                if id(module) in self._param_names:
                    part.params.append(self._param_names[id(module)])
                continue
            mname = self._names.get(module) if isinstance(module, nn.Module) else None
            if mname is None:
                continue  # functional ops (add, relu, reshape): nothing to prune or count
            handler = dep.handler
            is_out = self.dg.is_out_channel_pruning_fn(handler)
            is_in = self.dg.is_in_channel_pruning_fn(handler)
            if isinstance(module, _COMPUTE):
                if ops.module2type(module) == ops.OPTYPE.DEPTHWISE_CONV:  # its inputs are its outputs
                    part.outs[mname] = len(idxs)
                    part.producers.append(mname)
                    part.depthwise.add(mname)
                    continue
                if is_out and not is_in:
                    part.outs[mname] = len(idxs)
                    part.producers.append(mname)
                elif is_in and not is_out:
                    part.ins[mname] = len(idxs)
                    part.consumers.append(mname)
                if isinstance(module, _CONV) and module.groups > 1:
                    part.grouped[mname] = int(module.groups)
            elif any(True for _ in module.parameters(recurse=False)):
                part.norms.append(mname)
                part.norm_channels[mname] = len(idxs)
        return part

    def _make_group(
        self, name: str, size: int, part: _GroupParts, touched: set[str],
        layer_macs: Mapping[str, int], modules: Mapping[str, nn.Module],
    ) -> ChannelGroup:
        """One :class:`ChannelGroup`, with its grouped-convolution segmenting checked against its size."""
        grouping = 1
        for conv, groups in part.grouped.items():
            grouping = math.lcm(grouping, groups)
            if size % grouping:
                raise PruningError(
                    f"channel group '{name}' ({size} channels) feeds grouped convolution '{conv}' "
                    f"(groups={groups}) whose channel segments do not align with the group's other layers; "
                    f"add '{conv}' to prune.ignored_layers"
                )
        gmacs = int(sum(layer_macs.get(n, 0) for n in touched))
        return ChannelGroup(
            name=name,
            size=size,
            producers=tuple(dict.fromkeys(part.producers)),
            consumers=tuple(dict.fromkeys(part.consumers)),
            norms=tuple(dict.fromkeys(part.norms)),
            macs=gmacs,
            macs_share=gmacs / self.dense_macs if self.dense_macs else 0.0,
            grouping=grouping,
            grouped_layers=tuple(part.grouped),
            modules={n: modules[n] for n in (*part.producers, *part.norms, *part.consumers)},
        )

    @staticmethod
    def _make_layers(
        layer_macs: Mapping[str, int], modules: Mapping[str, nn.Module], parts: Mapping[str, _GroupParts]
    ) -> dict[str, ChannelLayer]:
        """Every Conv/Linear layer that runs, with the groups its output and input channels belong to."""
        out_groups: dict[str, dict[str, int]] = {}
        in_groups: dict[str, dict[str, int]] = {}
        depthwise: set[str] = set()
        for gname, part in parts.items():
            for mname, n in part.outs.items():
                out_groups.setdefault(mname, {})[gname] = n
            for mname, n in part.ins.items():
                in_groups.setdefault(mname, {})[gname] = n
            depthwise |= part.depthwise
        layers: dict[str, ChannelLayer] = {}
        for name, macs in layer_macs.items():
            module = modules[name]
            if isinstance(module, nn.Linear):
                out_dim, in_dim = module.out_features, module.in_features
            else:
                out_dim, in_dim = module.out_channels, module.in_channels
            bias = getattr(module, "bias", None)
            layers[name] = ChannelLayer(
                name=name,
                macs=macs,
                weight=module.weight.numel(),
                bias=bias.numel() if isinstance(bias, Tensor) else 0,
                out_dim=out_dim,
                in_dim=in_dim,
                depthwise=name in depthwise,
                out_groups=out_groups.get(name, {}),
                in_groups=in_groups.get(name, {}),
            )
        return layers

    # -- lookup ------------------------------------------------------------------------------------
    def group(self, name: str) -> ChannelGroup:
        """The group called ``name``; PruningError listing the allowed names otherwise."""
        try:
            return self._by_name[name]
        except KeyError:
            raise PruningError(
                f"unknown channel group '{name}'; allowed: {', '.join(self._by_name) or '(none)'}"
            ) from None

    def check_keep(self, keep: Mapping[str, int]) -> dict[str, int]:
        """Validate a keep plan and return it complete (every group, unnamed ones at full size)."""
        if not isinstance(keep, Mapping):
            raise PruningError(f"a channel keep plan must map group names to channel counts, got {type(keep).__name__}")
        full = {g.name: g.size for g in self.groups}
        for name, count in keep.items():
            group = self.group(name)
            if isinstance(count, bool) or not isinstance(count, Integral):
                raise PruningError(f"channel group '{name}': keep count must be an integer, got {count!r}")
            if count < 1:
                raise PruningError(
                    f"channel group '{name}' would keep {int(count)} of {group.size} channels, leaving the layer "
                    f"with no channels; keep between 1 and {group.size}"
                )
            if count > group.size:
                raise PruningError(
                    f"channel group '{name}' has {group.size} channels, cannot keep {int(count)}; "
                    f"keep between 1 and {group.size}"
                )
            if count % group.grouping:
                raise PruningError(
                    f"channel group '{name}' is split into {group.grouping} segments by grouped convolution "
                    f"'{group.grouped_layers[0]}', so it keeps a multiple of {group.grouping} channels "
                    f"(every segment the same), got {int(count)}; allowed: {group.grouping}, "
                    f"{2 * group.grouping}, ..., {group.size}"
                )
            full[name] = int(count)
        return full

    # -- costs of a plan -----------------------------------------------------------------------------
    def _fractions(self, keep: Mapping[str, int]) -> dict[str, float]:
        full = self.check_keep(keep)
        return {g.name: full[g.name] / g.size for g in self.groups}

    @staticmethod
    def _side(shares: Mapping[str, int], dim: int, frac: Mapping[str, float]) -> float:
        covered = sum(shares.values())
        return (sum(n * frac[g] for g, n in shares.items()) + max(dim - covered, 0)) / dim if dim else 1.0

    def _layer_fractions(self, layer: ChannelLayer, frac: Mapping[str, float]) -> tuple[float, float]:
        f_out = self._side(layer.out_groups, layer.out_dim, frac)
        f_in = 1.0 if layer.depthwise else self._side(layer.in_groups, layer.in_dim, frac)
        return f_out, f_in

    def macs(self, keep: Mapping[str, int]) -> int:
        """Exact Conv/Linear MACs per sample of the model slimmed by ``keep`` (no slimming needed).

        A layer's MACs scale with the kept fraction of its output channels times that of its input
        channels (a depthwise conv: its channels only), which is exact for convolutions and linear
        layers; :func:`measure_model` on the slimmed model gives the same number (tested).
        """
        return self._scaled(keep, "macs")

    @property
    def dense_weights(self) -> int:
        """Conv/Linear weights of the dense model (what :meth:`weights` counts)."""
        return sum(layer.weight for layer in self.layers.values())

    def weights(self, keep: Mapping[str, int]) -> int:
        """Exact Conv/Linear weight count (biases, BatchNorm and other parameters excluded) of the model
        slimmed by ``keep``: each layer's weights scale like its MACs (see :meth:`macs`)."""
        return self._scaled(keep, "weight")

    def _scaled(self, keep: Mapping[str, int], cost: str) -> int:
        """Sum over the Conv/Linear layers of their dense ``cost`` (``macs`` or ``weight``) times the kept
        fractions of their output and input channels under ``keep``."""
        frac = self._fractions(keep)
        total = 0.0
        for layer in self.layers.values():
            f_out, f_in = self._layer_fractions(layer, frac)
            total += getattr(layer, cost) * f_out * f_in
        return int(round(total))

    def params(self, keep: Mapping[str, int]) -> int:
        """Exact parameter count of the model slimmed by ``keep``.

        Conv/Linear weights scale like their MACs, biases with the output side, BatchNorm (and any other
        per-channel parameterised module inside a group) with its group; everything else is unchanged.
        """
        frac = self._fractions(keep)
        total = float(self.dense_params)
        for layer in self.layers.values():
            f_out, f_in = self._layer_fractions(layer, frac)
            total -= layer.weight * (1 - f_out * f_in) + layer.bias * (1 - f_out)
        for per_channel, shares in self._norm_costs:
            total -= per_channel * sum(n * (1 - frac[group]) for group, n in shares.items())
        for numel, group in self._param_costs:
            total -= numel * (1 - frac[group])
        return int(round(total))

    # -- scores and decisions ------------------------------------------------------------------------
    def scores(self, name: str, norm: str = "l1") -> Tensor:
        """Per-channel importance of group ``name`` (see :func:`channel_scores`)."""
        return channel_scores(self.group(name), norm)

    def removal_order(self, name: str, norm: str = "l1") -> list[int]:
        """Channel indices of group ``name`` from the lowest score up (ties: lower index first): removing
        ``r`` channels removes the first ``r`` of this list. A grouped group (``grouping`` > 1) lists whole
        offsets, one channel per segment each, so removing a multiple of ``grouping`` keeps segments equal."""
        group = self.group(name)
        scores = segment_scores(group, self.scores(name, norm))
        segment = group.size // group.grouping
        # by score, then offset, then segment: a grouped group's channels of one offset are adjacent
        return sorted(range(group.size), key=lambda i: (float(scores[i]), i % segment, i // segment))

    def removed(self, keep: Mapping[str, int], norm: str = "l1") -> dict[str, list[int]]:
        """Channel indices each group loses: its ``size - keep`` lowest scores (ties: lower index first)."""
        full = self.check_keep(keep)
        plan: dict[str, list[int]] = {}
        for group in self.groups:
            drop = group.size - full[group.name]
            if drop <= 0:
                continue
            plan[group.name] = sorted(self.removal_order(group.name, norm)[:drop])
        return plan

    def pruning_group(self, name: str, idxs: Sequence[int]) -> Any:
        """Torch-Pruning's group removing channels ``idxs`` of group ``name`` (mapped to every coupled layer)."""
        root = self._roots.get(name)
        if root is None:
            raise PruningError(f"channel group '{name}' is not in this model's channel graph")
        pruner = self.dg.get_pruner_of_module(root)
        return self.dg.get_pruning_group(root, pruner.prune_out_channels, list(idxs))


def channel_graph(
    model: nn.Module, example_inputs: Any, ignored_layers: Sequence[str] | None = None
) -> ChannelGraph:
    """Build Torch-Pruning's dependency graph of ``model`` and its prunable channel groups."""
    return ChannelGraph(model, example_inputs, ignored_layers)


def channel_groups(
    model: nn.Module, example_inputs: Any, ignored_layers: Sequence[str] | None = None
) -> list[ChannelGroup]:
    """The prunable channel groups of ``model`` (classifier outputs and ``ignored_layers`` excluded)."""
    return channel_graph(model, example_inputs, ignored_layers).groups


def channel_scores(group: ChannelGroup, norm: str = "l1") -> Tensor:
    """Importance of each channel of ``group``; low scores are removed first.

    ``"l1"`` / ``"l2"``: the L1 / L2 norm of the channel's output filters (weight rows and bias) over
    every producer of the group taken together (a residual group's channel is the sum of several
    convs' outputs, so all of them count). ``"bn"``: ``|gamma|`` of the group's BatchNorm layers,
    summed (network slimming, Liu et al. 2017); a group without BatchNorm raises PruningError.
    """
    if norm not in NORMS:
        raise PruningError(f"unknown channel norm '{norm}'; allowed: {', '.join(NORMS)}")
    with torch.no_grad():
        if norm == "bn":
            bns = [group.modules[n] for n in group.norms if isinstance(group.modules[n], _NORM_LAYERS)]
            bns = [b for b in bns if getattr(b, "weight", None) is not None]
            if not bns:
                raise PruningError(
                    f"channel group '{group.name}' has no affine BatchNorm, so norm 'bn' cannot score it; "
                    f"use 'l1' or 'l2'"
                )
            return sum(b.weight.detach().abs().float().cpu() for b in bns)
        total = torch.zeros(group.size, dtype=torch.float64)
        for name in group.producers:
            module = group.modules[name]
            rows = module.weight.detach().reshape(module.weight.shape[0], -1).double().cpu()
            bias = getattr(module, "bias", None)
            if isinstance(bias, Tensor):
                rows = torch.cat([rows, bias.detach().double().cpu()[:, None]], dim=1)
            if rows.shape[0] != group.size:
                continue  # a producer only partly in the group (split/cat): its rows do not align
            total += rows.abs().sum(1) if norm == "l1" else rows.pow(2).sum(1)
        return (total if norm == "l1" else total.sqrt()).float()


def segment_scores(group: ChannelGroup, scores: Tensor) -> Tensor:
    """``scores`` (one per channel, as :func:`channel_scores`) with each channel given its offset's mean over the
    group's ``grouping`` segments: a grouped convolution loses an offset from every segment at once, so an offset
    is scored as a whole (Torch-Pruning's rule). Unchanged (as float64) when the group has one segment."""
    scores = scores.double()
    if group.grouping == 1:
        return scores
    return scores.view(group.grouping, -1).mean(0).repeat(group.grouping)


def keep_from_fraction(groups: Sequence[ChannelGroup], fraction: float | Mapping[str, float]) -> dict[str, int]:
    """Keep plan removing ``floor(fraction * size)`` channels of each group (one fraction or one per group).

    ``fraction`` is the fraction of channels *removed*, in ``[0, 1)``: every group keeps at least one (a
    grouped group: at least one per segment, and removes a multiple of its ``grouping``, rounded down).
    """
    plan: dict[str, int] = {}
    known = {g.name for g in groups}
    if isinstance(fraction, Mapping):
        unknown = sorted(set(fraction) - known)
        if unknown:
            raise PruningError(f"unknown channel group(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    for group in groups:
        f = fraction.get(group.name, 0.0) if isinstance(fraction, Mapping) else fraction
        if isinstance(f, bool) or not isinstance(f, Real) or not 0.0 <= float(f) < 1.0:
            raise PruningError(
                f"channel removal fraction for group '{group.name}' must be a number in [0, 1) "
                f"(1 would leave no channels), got {f!r}"
            )
        removed = int(round(float(f) * group.size, 6) // 1)
        removed -= removed % group.grouping  # grouped convolutions: whole offsets, every segment alike
        plan[group.name] = max(group.size - removed, group.grouping)
    return plan


def prune_channels(
    model: nn.Module,
    example_inputs: Any,
    keep: Mapping[str, int],
    *,
    norm: str = "l1",
    ignored_layers: Sequence[str] | None = None,
    graph: ChannelGraph | None = None,
    removed: Mapping[str, Sequence[int]] | None = None,
) -> nn.Module:
    """A deep copy of ``model`` with each group's lowest-scoring channels physically removed.

    Torch-Pruning removes each group's channels from every coupled layer (producers, BatchNorm,
    consumers, residual partners), so the copy runs and has fewer parameters and MACs. ``model`` is
    left untouched. Raises PruningError for a bad plan (see the module docstring). ``graph``: the
    :func:`channel_graph` of ``model`` when the caller already built it (an allocator needed it), so the
    dense model is not traced twice. ``removed``: the channel indices each group loses, when the caller chose
    them another way (random pruning); they must agree with ``keep``.
    """
    graph = graph or channel_graph(model, example_inputs, ignored_layers)
    plan = graph.removed(keep, norm) if removed is None else _check_removed(graph, keep, removed)
    return _slim_or_refuse(model, example_inputs, plan, graph.ignored_layers)


def _check_removed(graph: ChannelGraph, keep: Mapping[str, int], removed: Mapping[str, Sequence[int]],
                   ) -> dict[str, list[int]]:
    """``removed`` as a plan, refused unless each group loses exactly ``size - keep`` distinct valid indices."""
    full = graph.check_keep(keep)
    plan: dict[str, list[int]] = {}
    for group in graph.groups:
        idxs = sorted({int(i) for i in removed.get(group.name, ())})
        if len(idxs) != group.size - full[group.name] or any(not 0 <= i < group.size for i in idxs):
            raise PruningError(f"channel group '{group.name}': the chosen channels {idxs[:8]} do not remove "
                               f"{group.size - full[group.name]} distinct channels of {group.size}")
        if idxs:
            plan[group.name] = idxs
    return plan


def check_slimmable(graph: ChannelGraph, *, masked_twin: bool = False) -> None:
    """Refuse, before any search, a model whose slimmed form would not run (or, with ``masked_twin``, whose
    masked twin would not compute what the slimmed form does).

    Removes one step (one channel, or one per segment of a grouped convolution) from every group of
    ``graph`` on a copy and runs it. Some models hard-code a width outside their layers (torchvision's
    ViT reshapes to a fixed ``hidden_dim``), which the masked twin never notices because it keeps the
    shapes; raises PruningError naming the first group whose removal breaks the forward. The channel
    environment scores allocations on the masked twin (``masked_twin=True``): a model whose twin cannot be
    built (a LayerNorm inside a group normalises over the channels that remain) or differs is refused too.
    """
    plan = {g.name: graph.removal_order(g.name)[:g.grouping] for g in graph.groups if g.size > g.grouping}
    if not plan:
        return
    slim = _slim_or_refuse(graph.model, graph.example_inputs, plan, graph.ignored_layers)
    if not masked_twin:
        return
    twin = _masked(graph.model, graph.example_inputs, plan, graph.ignored_layers)
    probe = tuple(
        torch.randn(x.shape, generator=torch.Generator().manual_seed(0)).to(x) if isinstance(x, Tensor) else x
        for x in _as_tuple(graph.example_inputs)
    )
    a, b = (_first_tensor(_forward(net, probe)) for net in (slim, twin))
    scale = max(float(b.abs().max()), 1.0) if b is not None else 1.0
    if a is not None and b is not None and not torch.allclose(a, b, rtol=1e-3, atol=1e-4 * scale):
        raise PruningError(
            f"the masked twin of this model does not compute what its slimmed form does (largest output "
            f"difference {float((a - b).abs().max()):.3g}), so masked scores would not predict the slimmed model"
        )


def _slim(
    model: nn.Module, example_inputs: Any, plan: Mapping[str, Sequence[int]], ignored: Sequence[str], *,
    name_breaking_group: bool = False,
) -> nn.Module:
    """A deep copy of ``model`` with ``plan``'s channels (``{group: indices}``) removed by Torch-Pruning.

    ``name_breaking_group``: run the copy after each group and raise PruningError naming the first group after
    which it no longer runs (slower: one forward per group; used only once the whole plan is known to break it).
    """
    slim = copy.deepcopy(model)
    if not plan:
        return slim
    sgraph = channel_graph(slim, example_inputs, ignored)
    modes = _set_eval(slim)
    try:
        for name, idxs in plan.items():
            sgraph.pruning_group(name, idxs).prune()
            error = _run_error(slim, example_inputs) if name_breaking_group else None
            if error is not None:
                reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
                layers = ", ".join(sgraph.group(name).producers[:3])
                raise PruningError(
                    f"channel group '{name}' cannot be slimmed: the model no longer runs without its channels "
                    f"({type(error).__name__}: {reason}), so it hard-codes that width outside its layers; keep it "
                    f"whole with model.exclude (its producers: {layers})"
                )
    finally:
        _restore(modes)
    return slim


def _slim_or_refuse(
    model: nn.Module, example_inputs: Any, plan: Mapping[str, Sequence[int]], ignored: Sequence[str]
) -> nn.Module:
    """:func:`_slim`, checked by one forward; a slimmed model that does not run is refused naming the group."""
    slim = _slim(model, example_inputs, plan, ignored)
    if plan and _run_error(slim, example_inputs) is not None:
        _slim(model, example_inputs, plan, ignored, name_breaking_group=True)
        raise PruningError("the slimmed model does not run, although every channel group slims alone; "
                           "keep the failing layers whole with model.exclude")
    return slim


def _forward(model: nn.Module, inputs: Any) -> Any:
    """``model``'s output on ``inputs`` in eval mode without gradients (its train/eval modes restored)."""
    modes = _set_eval(model)
    try:
        with torch.no_grad():
            return model(*_as_tuple(inputs))
    finally:
        _restore(modes)


def _run_error(model: nn.Module, example_inputs: Any) -> Exception | None:
    """The exception a forward pass of ``model`` on ``example_inputs`` raises (eval mode), or None."""
    try:
        _forward(model, example_inputs)
    except Exception as exc:  # any failure of the slimmed model: the caller names the group
        return exc
    return None


def _masked(
    model: nn.Module, example_inputs: Any, plan: Mapping[str, Sequence[int]], ignored: Sequence[str]
) -> nn.Module:
    """A deep copy of ``model`` with ``plan``'s channels zeroed in place (:func:`zero_channels`): the masked twin."""
    twin = copy.deepcopy(model)
    if plan:
        tgraph = channel_graph(twin, example_inputs, ignored)
        for name, idxs in plan.items():
            zero_channels(tgraph, name, idxs)
    return twin


def mask_channels(
    model: nn.Module,
    example_inputs: Any,
    keep: Mapping[str, int],
    *,
    norm: str = "l1",
    ignored_layers: Sequence[str] | None = None,
) -> nn.Module:
    """The masked twin of :func:`prune_channels`: a deep copy, same shapes, removed channels zeroed.

    For every removed channel it zeroes the producers' filter rows and biases, the affine parameters
    of the group's BatchNorm layers (so the channel is exactly 0 after BN in eval mode) and the
    consumers' input-channel weights (so nothing of the channel reaches the next layer). In eval mode
    it computes the same function as the slimmed model, up to float rounding.
    """
    graph = channel_graph(model, example_inputs, ignored_layers)
    return _masked(model, example_inputs, graph.removed(keep, norm), graph.ignored_layers)


@torch.no_grad()
def zero_channels(graph: ChannelGraph, name: str, idxs: Sequence[int]) -> None:
    """Zero channels ``idxs`` of group ``name`` in ``graph.model`` itself (in place): the masked twin's step.

    Zeroes the producers' filter rows and biases, the group's BatchNorm affine parameters and the consumers'
    input-channel weights, so in eval mode the model computes what the slimmed one would. Used by
    :func:`mask_channels` (on a copy) and by the channel environment (on its own model, restored at reset).
    """
    if not idxs:
        return
    ops = _tp().ops
    names = graph._names
    for dep, dep_idxs in graph.pruning_group(name, idxs):
        module = dep.target.module
        if not isinstance(module, nn.Module) or module not in names:
            continue
        index = torch.as_tensor(list(dep_idxs), dtype=torch.long)
        handler = dep.handler
        is_out = graph.dg.is_out_channel_pruning_fn(handler)
        is_in = graph.dg.is_in_channel_pruning_fn(handler)
        if isinstance(module, _COMPUTE):
            if ops.module2type(module) == ops.OPTYPE.DEPTHWISE_CONV or (is_out and not is_in):
                module.weight[index] = 0
                if module.bias is not None:
                    module.bias[index] = 0
            elif is_in and not is_out:
                if isinstance(module, _CONV) and module.groups != 1:
                    _zero_grouped_inputs(module, index)
                else:
                    module.weight[:, index] = 0
        elif isinstance(module, _NORM_LAYERS):
            if module.weight is not None:
                module.weight[index] = 0
                module.bias[index] = 0
            else:
                raise PruningError(
                    f"masking channels needs affine BatchNorm, '{names[module]}' has none; only slimming "
                    f"(prune_channels, the channel baselines) handles this model"
                )
        elif any(True for _ in module.parameters(recurse=False)):
            raise PruningError(
                f"masking channels does not support {type(module).__name__} ('{names[module]}') inside a "
                f"channel group (it would normalise or scale over the remaining channels); only slimming "
                f"(prune_channels, the channel baselines) handles this model"
            )


def _zero_grouped_inputs(conv: nn.Module, index: Tensor) -> None:
    """Zero input channels ``index`` of a grouped convolution: channel ``c`` is column ``c % per_group`` of
    the filters of convolution group ``c // per_group`` (its weight holds only its own group's inputs)."""
    per_in = conv.in_channels // conv.groups
    per_out = conv.out_channels // conv.groups
    for c in index.tolist():
        g, j = divmod(int(c), per_in)
        conv.weight[g * per_out:(g + 1) * per_out, j] = 0


def measure_model(model: nn.Module, example_inputs: Any) -> ModelCost:
    """Parameters and Conv/Linear MACs per sample of ``model`` as it is, plus Torch-Pruning's op count.

    For a slimmed model this re-measures its real cost (no masks involved). MACs use PuRL's convention
    (``weight.numel() * output positions`` of Conv/Linear layers); ``ops`` is
    ``torch_pruning.utils.count_ops_and_params``'s total, which also counts BatchNorm and pooling.
    """
    tp = _tp()
    macs, _ = _dense_costs(model, example_inputs)
    modes = _set_eval(model)
    try:
        with torch.no_grad():
            ops, params = tp.utils.count_ops_and_params(model, example_inputs)
    finally:
        _restore(modes)
    return ModelCost(params=int(params), macs=int(sum(macs.values())), ops=float(ops))
