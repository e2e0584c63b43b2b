"""Turn in-memory image tensors into a DataBundle, with the split policy of the dataset.

Two policies: datasets without an official split are divided three ways; datasets with an
official train/test split carve reward-val out of train and keep the official test set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from torch import Tensor

from purl.data.bundle import DataBundle
from purl.data.registry import DataOptions
from purl.data.splits import holdout_indices, shuffled_indices, split_indices, take
from purl.data.views import ImageTensorSplit
from purl.errors import DataError

Augment = Callable[[Tensor], Tensor]


def check_labels(name: str, targets: Tensor, num_classes: int) -> None:
    """Raise DataError unless every label is an integer class index in [0, num_classes)."""
    if targets.numel() == 0:
        raise DataError(f"dataset '{name}' has no samples")
    low, high = int(targets.min()), int(targets.max())
    if low < 0 or high >= num_classes:
        raise DataError(
            f"dataset '{name}' has labels in [{low}, {high}], expected 0..{num_classes - 1}; "
            "the files are corrupt"
        )


def _shape(images: Tensor) -> tuple[int, int, int]:
    c, h, w = images.shape[1:]
    return (int(c), int(h), int(w))


def three_way_bundle(
    name: str,
    images: Tensor,
    targets: Tensor,
    *,
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    opts: DataOptions,
    augment: Augment | None = None,
) -> DataBundle:
    """Split all samples into train / val / test by ``opts`` fractions and seed (no official split)."""
    check_labels(name, targets, num_classes)
    indices = split_indices(len(images), opts.val_fraction, opts.test_fraction, opts.seed)
    return _bundle(name, images, targets, images, targets, indices, num_classes, mean, std, opts, augment)


def official_split_bundle(
    name: str,
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    *,
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    opts: DataOptions,
    augment: Augment | None = None,
) -> DataBundle:
    """Carve reward-val (``opts.val_fraction``) from the official train set; the official test set is test."""
    for part in (train, test):
        check_labels(name, part[1], num_classes)
    if _shape(train[0]) != _shape(test[0]):
        raise DataError(
            f"dataset '{name}': train images are {_shape(train[0])} but test images {_shape(test[0])}"
        )
    train_idx, val_idx = holdout_indices(len(train[0]), opts.val_fraction, opts.seed)
    test_idx = shuffled_indices(len(test[0]), opts.seed)
    return _bundle(name, *train, *test, (train_idx, val_idx, test_idx), num_classes, mean, std, opts, augment)


def _bundle(
    name: str,
    train_images: Tensor,
    train_targets: Tensor,
    test_images: Tensor,
    test_targets: Tensor,
    indices: tuple[np.ndarray, np.ndarray, np.ndarray],
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    opts: DataOptions,
    augment: Augment | None,
) -> DataBundle:
    train_idx, val_idx, test_idx = (take(i, opts.max_samples) for i in indices)
    train_augment = augment if opts.augment else None
    return DataBundle(
        name=name,
        train=ImageTensorSplit(train_images, train_targets, train_idx, mean, std, train_augment),
        val=ImageTensorSplit(train_images, train_targets, val_idx, mean, std),
        test=ImageTensorSplit(test_images, test_targets, test_idx, mean, std),
        input_shape=_shape(train_images),
        num_classes=num_classes,
    )
