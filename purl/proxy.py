"""The short-fine-tune proxy: a cheap guess, on the reward split, of how a pruned model ends after the real fine-tuning.

The proxy fine-tunes a pruned model for ``steps`` SGD steps on the train split (masks kept), re-estimates its
BatchNorm statistics and records which reward-split images it gets right. The agent's selection re-ranks its
candidates with it (:mod:`agents.selection`) and ``env.prior: auto`` picks the best baseline as the prior with it
(:mod:`envs.prior`). One-shot accuracy (no fine-tuning) ranks allocations at high sparsity almost in reverse;
a few dozen steps rank them much closer to the fine-tuned truth (``benchmarks/bench_proxy_fidelity.py``,
docs/RESULTS.md).

Two scores on the same images are compared *paired* (:meth:`ProxyScore.beats`): only the images one model gets
right and the other wrong count, so "can the proxy tell them apart" has an answer (McNemar's test, normal
approximation) instead of a bare difference of means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from purl.config import AUTO_BN_BATCHES
from purl.evaluator import calibration_batches, has_batchnorm
from purl.pruning import MaskState
from purl.runtime import seed_everything
from purl.task import Task
from purl.training import MaskedTrainer, cycle, momentum_sgd, recalibrate_batchnorm, top1_correct


@dataclass(frozen=True)
class ProxyScore:
    """Which reward-split images a proxy-fine-tuned model classifies correctly (bool per image, on the CPU)."""

    correct: torch.Tensor

    @property
    def top1(self) -> float:
        """Reward-split top-1 (fraction)."""
        n = int(self.correct.numel())
        return int(self.correct.sum()) / n if n else 0.0

    def beats(self, other: ProxyScore, z: float) -> bool:
        """True when this score is ahead of ``other`` by more than ``z`` paired standard errors.

        McNemar's statistic on the discordant images: ``b`` (this right, other wrong) and ``c`` (the reverse);
        ahead when ``b - c > z * sqrt(b + c)``. ``z = 0`` is a plain "more images right".
        """
        if self.correct.shape != other.correct.shape:
            raise ValueError("paired comparison needs scores on the same images")
        b = int((self.correct & ~other.correct).sum())
        c = int((~self.correct & other.correct).sum())
        return b - c > z * math.sqrt(b + c)


def short_finetune(task: Task, model: nn.Module, masks: MaskState | None, *, steps: int, seed: int,
                   val_samples: int | None) -> ProxyScore:
    """``steps`` SGD steps (lr ``finetune.lr``, momentum 0.9) on the train split, masks kept when given, BatchNorm
    re-estimated, then the reward split (its first ``val_samples`` images) scored. Changes ``model`` in place."""
    device, cfg = task.device, task.config
    seed_everything(seed)
    loader = task.data.loader("train", cfg.data.batch_size, seed=seed)
    MaskedTrainer(model, momentum_sgd(model, cfg.finetune.lr), cycle(loader), device=device, masks=masks).steps(steps)
    model.eval()
    if has_batchnorm(model):
        with torch.no_grad():
            recalibrate_batchnorm(model, calibration_batches(task.data, device, AUTO_BN_BATCHES, cfg.data.batch_size))
    x, y = task.data.tensors("val", device, val_samples)
    return ProxyScore(top1_correct(model, x, y, batch_size=cfg.data.eval_batch_size).cpu())
