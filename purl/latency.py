"""Measured latency of a model on CPU: interleaved timing and median latency ratios (dense vs pruned).

Used by ``purl prune`` / ``purl compare`` at channel granularity (the ``latency_ratio`` result) and by
``benchmarks/bench_latency.py``. Repeats are *interleaved* (each repeat times every model once, in turn) so
that all models see the same machine load; the result is the median. Timing is noisy on a shared machine,
which is why it is opt-in in ``purl compare`` (``compare.measure_latency``).
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["LatencyResult", "interleaved_medians", "latency_ratios"]


@dataclass(frozen=True)
class LatencyResult:
    """Median milliseconds per forward pass of the dense and the pruned model at one batch size.

    ``ratio`` = pruned / dense (below 1: the pruned model is faster), comparable to a FLOPs keep ratio.
    """

    batch: int
    dense_ms: float
    pruned_ms: float
    ratio: float


def interleaved_medians(calls: Sequence[Callable[[], Any]], *, repeats: int, warmup: int = 2) -> list[float]:
    """Median seconds of each call; every repeat runs every call once, in turn (same load for all)."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    for call in calls:
        for _ in range(warmup):
            call()
    samples: list[list[float]] = [[] for _ in calls]
    for _ in range(repeats):
        for i, call in enumerate(calls):
            start = time.perf_counter()
            call()
            samples[i].append(time.perf_counter() - start)
    return [statistics.median(s) for s in samples]


@contextlib.contextmanager
def _cpu_eval(model: nn.Module) -> Iterator[nn.Module]:
    """An eval-mode CPU copy of ``model`` (the original keeps its device and train/eval flags)."""
    clone = copy.deepcopy(model).cpu().eval()
    try:
        yield clone
    finally:
        del clone


def latency_ratios(
    dense: nn.Module,
    pruned: nn.Module,
    input_shape: Sequence[int],
    *,
    batches: Sequence[int] = (1, 64),
    repeats: int = 20,
    warmup: int = 3,
    seed: int = 0,
) -> list[LatencyResult]:
    """Time ``dense`` and ``pruned`` with PyTorch eager on CPU at each batch size (``input_shape`` per sample).

    Both run in eval mode under ``torch.no_grad`` on CPU copies, with torch's current thread setting,
    on the same random input; medians of ``repeats`` interleaved runs after ``warmup`` untimed ones.
    """
    results: list[LatencyResult] = []
    gen = torch.Generator().manual_seed(seed)
    with _cpu_eval(dense) as d, _cpu_eval(pruned) as p, torch.no_grad():
        for batch in batches:
            x = torch.randn((int(batch), *input_shape), generator=gen)
            dense_s, pruned_s = interleaved_medians([lambda m=d, x=x: m(x), lambda m=p, x=x: m(x)], repeats=repeats,
                                                    warmup=warmup)
            results.append(LatencyResult(int(batch), 1e3 * dense_s, 1e3 * pruned_s,
                                         pruned_s / dense_s if dense_s > 0 else float("nan")))
    return results
