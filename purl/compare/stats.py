"""Paired statistics of a comparison: every method against a reference, seed by seed.

A seed gives every method of a grid the same fine-tuning data order (and the same dense model and split),
so two methods' results at one (target, seed) are a pair: the paired difference removes the seed's own
luck, which unpaired means +- std over a few seeds do not (Le & Hua, ICLR 2021, and Liu et al., ICLR 2019,
show how retraining noise and budget reorder pruning methods).

* :func:`paired_difference`: mean of ``a - b`` over the common seeds with a two-sided 95% Student-t interval
  (``mean +- t(0.975, n-1) * sd / sqrt(n)``), and wins / ties / losses of ``a`` seed by seed.
* :func:`separated`: True when the interval excludes zero (the lead is outside the noise).

A tie is an equal score on a seed (``|a - b| <= TIE_TOLERANCE`` points: the same number of test images
right). With one pair there is no interval: nothing is separated.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass

from scipy.stats import t as student_t

CONFIDENCE = 0.95
"""Two-sided confidence of every interval PuRL reports."""

TIE_TOLERANCE = 1e-6
"""Percentage points below which two scores on one seed count as equal (a tie)."""


@dataclass(frozen=True)
class PairedDifference:
    """``a - b`` over the seeds both have: mean, 95% t-interval (NaN with one pair) and W/T/L of ``a``."""

    n: int
    mean: float
    low: float
    high: float
    wins: int
    ties: int
    losses: int

    @property
    def separated(self) -> bool:
        """True when the interval lies wholly above or wholly below zero."""
        return self.n >= 2 and (self.low > 0.0 or self.high < 0.0)

    @property
    def wtl(self) -> str:
        """``"W/T/L"`` text, e.g. ``"3/1/1"``."""
        return f"{self.wins}/{self.ties}/{self.losses}"


def t_interval(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Mean and two-sided Student-t interval of the mean of ``values`` (NaN bounds for fewer than two)."""
    if not values:
        return math.nan, math.nan, math.nan
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = float(student_t.ppf(0.5 + confidence / 2, len(values) - 1)) * statistics.stdev(values) / math.sqrt(
        len(values))
    return mean, mean - half, mean + half


def interval_half_width(values: list[float], confidence: float = CONFIDENCE) -> float:
    """Half-width of the t-interval of the mean of ``values`` (0 for fewer than two: no interval to draw)."""
    mean, low, _ = t_interval(values, confidence)
    return 0.0 if math.isnan(low) else mean - low


def paired_difference(a: Mapping[int, float], b: Mapping[int, float]) -> PairedDifference:
    """``a - b`` paired by seed (the keys); seeds only one side has are left out."""
    seeds = sorted(set(a) & set(b))
    diffs = [float(a[s]) - float(b[s]) for s in seeds]
    diffs = [d for d in diffs if math.isfinite(d)]
    mean, low, high = t_interval(diffs)
    return PairedDifference(
        n=len(diffs), mean=mean, low=low, high=high,
        wins=sum(d > TIE_TOLERANCE for d in diffs), ties=sum(abs(d) <= TIE_TOLERANCE for d in diffs),
        losses=sum(d < -TIE_TOLERANCE for d in diffs))
