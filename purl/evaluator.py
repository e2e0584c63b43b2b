"""Reward-split scoring of a masked network: top-1, BatchNorm recalibration, memoisation and a prefix cache.

:class:`RewardEvaluator` is what the RL environment calls after every step. It owns

* the reward-validation tensors (already on the device, split into fixed chunks);
* optional **BatchNorm recalibration** on fixed train-split batches before each score (a pruned BN
  network scored with the dense statistics sits at chance; docs/RESULTS.md, section 5);
* **memoisation** by the tuple of per-layer pruned counts (valid while nothing is fine-tuned, since a
  count then determines the mask);
* a **prefix-activation cache** (:class:`ForwardPlan`): in a forward-order walk the layers before the
  one being pruned do not change for the rest of the pass, so the activations that cross the cut in
  front of the next layer (and, with recalibration, the train-mode activations of the calibration
  batches) are kept, and the next score runs only the suffix of the network. The BatchNorm statistics
  of the prefix stay valid for the same reason; only the suffix's BatchNorm layers are re-estimated.

The cache changes no result: the suffix runs the same modules on the same tensors, chunk for chunk, as
the full forward pass (``tests/test_evaluator.py`` asserts identical accuracies on LeNet-5, ResNet-20 and
a torchvision model). A cached prefix is reused only when the pruned counts of every layer inside it are
unchanged. The plan comes from :func:`torch.fx.symbolic_trace`; a model fx cannot trace, a layer used
outside the traced graph, or a BatchNorm called twice, disables the cache (full forward passes instead).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.fx import Node
from torch.fx.node import map_arg

__all__ = ["ForwardPlan", "RewardEvaluator", "calibration_batches", "has_batchnorm"]

BatchNorm = nn.modules.batchnorm._BatchNorm


def calibration_batches(data: Any, device: torch.device, n_batches: int, batch_size: int) -> list[Tensor]:
    """The first ``n_batches`` train-split batches (eval transforms, fixed order) for BatchNorm recalibration,
    so that a recalibrated score stays a deterministic function of the masks."""
    if n_batches <= 0:
        return []
    return list(data.tensors("train", device, n_batches * batch_size)[0].split(batch_size))


def has_batchnorm(model: nn.Module) -> bool:
    """True when ``model`` has any BatchNorm layer (then pruned scores need recalibrated statistics)."""
    return any(isinstance(m, BatchNorm) for m in model.modules())


class ForwardPlan:
    """``model``'s forward pass as an fx node list that can start at a cut and save the values crossing another.

    ``cut(i)`` is the index of the first node that uses prunable layer ``i``; ``prefix_layers(c)`` the
    prunable layers all of whose uses lie before node ``c`` (their counts key a cached prefix).
    Modules are the model's own objects, so masks written into the weights are seen at once.
    """

    def __init__(self, model: nn.Module, layer_names: Sequence[str]) -> None:
        graph = torch.fx.symbolic_trace(model).graph
        self.nodes: list[Node] = list(graph.nodes)
        self.index = {node: i for i, node in enumerate(self.nodes)}
        placeholders = [n for n in self.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise ValueError(f"forward takes {len(placeholders)} inputs; the prefix cache needs exactly one")
        self.input = placeholders[0]
        self.modules = dict(model.named_modules())
        self.model = model
        self.last_use = {n: max((self.index[u] for u in n.users), default=self.index[n]) for n in self.nodes}
        uses: dict[str, list[int]] = {name: [] for name in layer_names}
        bn_calls: dict[str, int] = {}
        for i, node in enumerate(self.nodes):
            target = str(node.target)
            if node.op == "call_module":
                if target in uses:
                    uses[target].append(i)
                if isinstance(self.modules[target], BatchNorm):
                    bn_calls[target] = bn_calls.get(target, 0) + 1
            elif node.op == "get_attr" and target.rpartition(".")[0] in uses:
                uses[target.rpartition(".")[0]].append(i)
        unused = [name for name, at in uses.items() if not at]
        if unused:
            raise ValueError(f"prunable layer(s) {unused} are not called in the traced graph")
        if any(count > 1 for count in bn_calls.values()):
            raise ValueError("a BatchNorm layer is called more than once")
        self.first_use = [min(uses[name]) for name in layer_names]
        self.final_use = [max(uses[name]) for name in layer_names]
        self.batchnorms = [(self.index[n], self.modules[str(n.target)]) for n in self.nodes
                           if n.op == "call_module" and isinstance(self.modules[str(n.target)], BatchNorm)]

    def cut(self, layer: int) -> int:
        return self.first_use[layer]

    def prefix_layers(self, cut: int) -> list[int]:
        return [i for i, last in enumerate(self.final_use) if last < cut]

    def batchnorms_from(self, cut: int) -> list[nn.Module]:
        return [bn for at, bn in self.batchnorms if at >= cut]

    def live_at(self, cut: int) -> list[Node]:
        """Values computed before node ``cut`` and used at or after it (parameters are re-read, not kept)."""
        return [n for n in self.nodes[:cut] if n.op != "get_attr" and self.last_use[n] >= cut]

    def _attr(self, target: str) -> Any:
        value: Any = self.model
        for part in target.split("."):
            value = getattr(value, part)
        return value

    def run(self, start: int, values: dict[Node, Tensor], save_at: int | None = None) -> tuple[Tensor, dict | None]:
        """Run nodes ``start..`` from ``values`` (the live values at ``start``, cloned here: modules may
        work in place); return the output and, when ``save_at`` > ``start``, the values live at ``save_at``."""
        env: dict[Node, Any] = {node: value.clone() for node, value in values.items()}
        saved: dict[Node, Tensor] | None = None
        keep = set(self.live_at(save_at)) if save_at is not None and save_at > start else None
        for i in range(start, len(self.nodes)):
            if keep is not None and i == save_at:
                saved = {node: env[node].clone() for node in keep}
            node = self.nodes[i]
            if node.op == "output":
                return map_arg(node.args[0], lambda n: env[n]), saved
            args = map_arg(node.args, lambda n: env[n] if n in env else self._attr(str(n.target)))
            kwargs = map_arg(node.kwargs, lambda n: env[n] if n in env else self._attr(str(n.target)))
            if node.op == "call_module":
                env[node] = self.modules[str(node.target)](*args, **kwargs)
            elif node.op == "call_function":
                env[node] = node.target(*args, **kwargs)
            elif node.op == "call_method":
                env[node] = getattr(args[0], str(node.target))(*args[1:], **kwargs)
            elif node.op == "get_attr":
                env[node] = self._attr(str(node.target))
            for used in node.all_input_nodes:  # free what no later node needs (saved values were cloned)
                if self.last_use[used] <= i:
                    env.pop(used, None)
        raise RuntimeError("the traced graph has no output node")  # pragma: no cover


@dataclass
class _Prefix:
    """Activations at one cut, valid while the prefix layers keep these pruned counts."""

    cut: int
    key: tuple[int, ...]
    val: list[dict[Node, Tensor]]
    calibration: list[dict[Node, Tensor]]


class RewardEvaluator:
    """Top-1 of a masked network on the reward split; see the module docstring.

    :param model: the network (in eval mode; its weights carry the masks).
    :param layer_names: prunable layers in the order the counts passed to :meth:`accuracy` follow.
    :param inputs, targets: the reward-validation tensors, on the model's device.
    :param batch_size: evaluation chunk size.
    :param calibration: fixed train-split input batches for BatchNorm recalibration ([] = off).
    :param memoize: memoise scores by the tuple of pruned counts.
    :param prefix_cache_mb: largest prefix cache in MiB (0 = off; also off when the plan cannot be built).
    """

    max_memoized = 100_000

    def __init__(
        self,
        model: nn.Module,
        layer_names: Sequence[str],
        inputs: Tensor,
        targets: Tensor,
        *,
        batch_size: int,
        calibration: Sequence[Tensor] = (),
        memoize: bool = True,
        prefix_cache_mb: float = 1024.0,
    ) -> None:
        self.model = model
        self.n_layers = len(layer_names)
        self.chunks = list(zip(inputs.split(batch_size), targets.split(batch_size), strict=True))
        self.n = int(targets.numel())
        self.calibration = list(calibration)
        self.memoize = memoize
        self.limit_bytes = prefix_cache_mb * 2**20
        self.evaluations = 0
        self._memo: dict[tuple[int, ...], float] = {}
        self._prefix: _Prefix | None = None
        self.plan: ForwardPlan | None = None
        self.plan_error: str | None = None
        if prefix_cache_mb > 0:
            try:
                self.plan = ForwardPlan(model, layer_names)
            except Exception as exc:  # noqa: BLE001 - any trace failure just means full forward passes
                self.plan_error = f"{type(exc).__name__}: {exc}"

    # ------------------------------------------------------------------ public
    def dense_accuracy(self) -> float:
        """Top-1 of the network as it is (no recalibration, no caching): the dense reference."""
        return self._count(self._full_pass()) / self.n

    def accuracy(self, counts: Sequence[int], next_layer: int | None = None) -> float:
        """Top-1 of the network whose layers carry ``counts`` pruned weights.

        ``next_layer`` (the layer the walk prunes next) says where to keep a prefix for the next call.
        """
        key = tuple(int(c) for c in counts)
        if self.memoize and key in self._memo:
            return self._memo[key]
        if self.plan is None:
            if self.calibration:
                self._recalibrate_full()
            acc = self._count(self._full_pass()) / self.n
        else:
            acc = self._suffix_accuracy(key, next_layer)
        if self.memoize and len(self._memo) < self.max_memoized:
            self._memo[key] = acc
        return acc

    def memo_items(self, start: int = 0) -> list[tuple[tuple[int, ...], float]]:
        """The memoised scores from the ``start``-th on, in the order they were made (an exact resume of a search
        carries them over, so the resumed run makes the evaluations an uninterrupted one makes, no more)."""
        return list(itertools.islice(self._memo.items(), max(0, int(start)), None))

    def load_memo(self, items: Sequence[tuple[Sequence[int], float]]) -> None:
        """Add memoised scores (:meth:`memo_items` of the same network and reward split), in order."""
        if not self.memoize:
            return
        for key, acc in items:
            if len(self._memo) >= self.max_memoized:
                break
            self._memo.setdefault(tuple(int(c) for c in key), float(acc))

    def forget(self) -> None:
        """Drop memoised scores and cached prefixes (call after the weights changed beyond their masks)."""
        self._memo.clear()
        self._prefix = None

    # ------------------------------------------------------------------ full pass
    @torch.inference_mode()
    def _full_pass(self) -> Tensor:
        """Top-1 hits of a full forward pass, on the device (:func:`purl.training.count_hits`, the one loop)."""
        from purl.training import count_hits, top1_hits

        self.evaluations += 1
        hits = count_hits(self.model, self.chunks, top1_hits)
        return hits if hits is not None else torch.zeros((), dtype=torch.long)

    def _count(self, hits: Tensor | list[Tensor]) -> int:
        return int(hits if isinstance(hits, Tensor) else torch.stack(hits).sum())  # one host sync

    def _recalibrate_full(self) -> None:
        from purl.training import recalibrate_batchnorm

        with torch.no_grad():
            recalibrate_batchnorm(self.model, self.calibration)

    # ------------------------------------------------------------------ prefix path
    def _suffix_accuracy(self, key: tuple[int, ...], next_layer: int | None) -> float:
        plan = self.plan
        assert plan is not None
        prefix = self._prefix
        if prefix is not None and tuple(key[i] for i in plan.prefix_layers(prefix.cut)) != prefix.key:
            prefix = None
        start = prefix.cut if prefix is not None else 0
        save_at = plan.cut(next_layer) if next_layer is not None else None
        if save_at is not None and save_at <= start:
            save_at = None
        self.evaluations += 1
        with torch.no_grad():
            new_cal = self._recalibrate_suffix(start, prefix, save_at) if self.calibration else []
        with torch.inference_mode():
            hits, new_val = [], []
            for index, (x, y) in enumerate(self.chunks):
                values = prefix.val[index] if prefix is not None else {plan.input: x}
                out, saved = plan.run(start, values, save_at)
                hits.append((out.argmax(1) == y).sum())
                if saved is not None:
                    new_val.append(saved)
        if save_at is not None:
            self._keep(_Prefix(save_at, tuple(key[i] for i in plan.prefix_layers(save_at)), new_val, new_cal))
        return self._count(hits) / self.n

    def _recalibrate_suffix(self, start: int, prefix: _Prefix | None, save_at: int | None) -> list[dict]:
        """Re-estimate the statistics of the BatchNorm layers at or after ``start`` (as
        :func:`purl.training.recalibrate_batchnorm` does for all of them); return the calibration
        values live at ``save_at``."""
        plan = self.plan
        assert plan is not None
        norms = plan.batchnorms_from(start)
        momenta = [(m.momentum, m.training) for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        saved_all: list[dict] = []
        try:
            for index, batch in enumerate(self.calibration):
                values = prefix.calibration[index] if prefix is not None else {plan.input: batch}
                _, saved = plan.run(start, values, save_at)
                if saved is not None:
                    saved_all.append(saved)
        finally:
            for m, (momentum, training) in zip(norms, momenta, strict=True):
                m.momentum = momentum
                m.train(training)
        return saved_all

    def _keep(self, prefix: _Prefix) -> None:
        size = sum(t.numel() * t.element_size() for values in (*prefix.val, *prefix.calibration)
                   for t in values.values())
        if size <= self.limit_bytes:
            self._prefix = prefix

