"""MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 read from ``root`` with torchvision's readers.

The files are the official on-disk formats torchvision uses (``MNIST/raw/*-idx?-ubyte``,
``cifar-10-batches-py/``, ``cifar-100-python/``). They are downloaded only with ``download=True``
(``data.download=true``); otherwise missing files raise a DataError naming the paths.
Images are decoded once into an in-memory uint8 tensor (at most ~150 MB, CIFAR) so per-sample
augmentation and whole-split evaluation avoid PIL round trips. The official train set is split into
train / reward-val; the official test set is the test split (``test_fraction`` is ignored).

CIFAR md5 checks: torchvision's CIFAR classes compare every batch file's md5 with the official
release. That rejects any file other than the original release (e.g. tiny test fixtures written in
the genuine pickle format) and re-hashes ~180 MB on every build. The subclasses below only drop those
per-file md5 checks; the downloaded archive is still md5-verified by torchvision, and we validate the
decoded structure (image shape, label range) instead.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchvision import datasets as tvd
from torchvision import transforms as T

from purl.data.assemble import official_split_bundle
from purl.data.bundle import DataBundle
from purl.data.registry import DATASETS, DataOptions
from purl.errors import DataError

# Errors torchvision / pickle / numpy raise on truncated or malformed files.
READ_ERRORS = (
    OSError,
    ValueError,
    KeyError,
    TypeError,
    EOFError,
    AssertionError,
    RuntimeError,
    pickle.UnpicklingError,
)

_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class _CIFAR10Files(tvd.CIFAR10):
    """torchvision's CIFAR-10 reader, checking that batch files exist but not their md5 (see module doc)."""

    train_list = [[name, None] for name, _ in tvd.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in tvd.CIFAR10.test_list]
    meta = {**tvd.CIFAR10.meta, "md5": None}


class _CIFAR100Files(tvd.CIFAR100):
    """torchvision's CIFAR-100 reader, checking that files exist but not their md5 (see module doc)."""

    train_list = [[name, None] for name, _ in tvd.CIFAR100.train_list]
    test_list = [[name, None] for name, _ in tvd.CIFAR100.test_list]
    meta = {**tvd.CIFAR100.meta, "md5": None}


def missing_error(name: str, root: Path, missing: list[Path]) -> DataError:
    """DataError saying which files are missing where, and how to get them."""
    shown = ", ".join(str(p) for p in missing[:4]) + (" ..." if len(missing) > 4 else "")
    return DataError(
        f"dataset '{name}' not found under data.root={root}: missing {shown}. "
        f"Pass data.download=true to download it, or place the files there."
    )


def _corrupt(name: str, folder: Path, problem: object) -> DataError:
    return DataError(
        f"cannot read dataset '{name}' from {folder}: {problem!s}; the files look corrupt or truncated "
        "(delete them and pass data.download=true, or replace them)"
    )


def _download_or_fail(
    name: str, root: Path, missing: list[Path], opts: DataOptions, download: Callable[[], object]
) -> None:
    """Download when allowed and files are missing; otherwise raise the missing-files DataError."""
    if not missing:
        return
    if not opts.download:
        raise missing_error(name, root, missing)
    try:
        root.mkdir(parents=True, exist_ok=True)
        download()
    except Exception as exc:  # network errors come in many types (URLError, HTTPError, socket errors)
        raise DataError(f"downloading dataset '{name}' into {root} failed: {exc}") from None


def _load_mnist_like(name: str, cls: type[tvd.MNIST], opts: DataOptions) -> tuple[tuple[Tensor, Tensor], ...]:
    """(train, test) as ((N, 1, 28, 28) uint8, labels) from ``root/<Class>/raw`` (or legacy .pt files)."""
    root = opts.root
    folder = root / cls.__name__
    missing = [folder / "raw" / f for f in _MNIST_FILES if not (folder / "raw" / f).is_file()]
    legacy = all((folder / "processed" / f).is_file() for f in (cls.training_file, cls.test_file))
    _download_or_fail(
        name, root, [] if legacy else missing, opts, lambda: cls(str(root), train=True, download=True)
    )
    parts = []
    for train in (True, False):
        try:
            ds = cls(str(root), train=train, download=False)
        except READ_ERRORS as exc:
            raise _corrupt(name, folder, exc) from None
        data = torch.as_tensor(ds.data)
        if data.ndim != 3 or data.dtype != torch.uint8:
            raise _corrupt(name, folder, f"images {tuple(data.shape)} {data.dtype}, not (N, H, W) uint8")
        targets = torch.as_tensor(ds.targets).long()
        if len(targets) != len(data):
            raise _corrupt(name, folder, f"{len(data)} images but {len(targets)} labels")
        parts.append((data.unsqueeze(1).contiguous(), targets))
    return tuple(parts)


def _load_cifar(name: str, cls: type[tvd.CIFAR10], opts: DataOptions) -> tuple[tuple[Tensor, Tensor], ...]:
    """(train, test) as ((N, 3, 32, 32) uint8, labels) from the pickled CIFAR batches under ``root``."""
    root = opts.root
    folder = root / cls.base_folder
    files = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    missing = [folder / f for f in files if not (folder / f).is_file()]
    _download_or_fail(name, root, missing, opts, lambda: cls(str(root), train=True, download=True))
    parts = []
    for train in (True, False):
        try:
            ds = cls(str(root), train=train, download=False)
        except READ_ERRORS as exc:
            raise _corrupt(name, folder, exc) from None
        data = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
        targets = torch.as_tensor(np.asarray(ds.targets, dtype=np.int64))
        if data.dtype != torch.uint8 or len(targets) != len(data):
            raise _corrupt(name, folder, f"{len(data)} {data.dtype} images but {len(targets)} labels")
        parts.append((data, targets))
    return tuple(parts)


def _cifar_augment() -> T.Compose:
    """Standard CIFAR train augmentation on (3, 32, 32) uint8 tensors: pad-4 random crop + horizontal flip."""
    return T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()])


@DATASETS.register("mnist")
def mnist(opts: DataOptions) -> DataBundle:
    """MNIST: 60k/10k 28x28 grey digits, 10 classes (torchvision files in root/MNIST/raw)."""
    train, test = _load_mnist_like("mnist", tvd.MNIST, opts)
    return official_split_bundle(
        "mnist", train, test, num_classes=10, mean=(0.1307,), std=(0.3081,), opts=opts
    )


@DATASETS.register("fashion-mnist")
def fashion_mnist(opts: DataOptions) -> DataBundle:
    """Fashion-MNIST: 60k/10k 28x28 grey clothing images, 10 classes (root/FashionMNIST/raw)."""
    train, test = _load_mnist_like("fashion-mnist", tvd.FashionMNIST, opts)
    return official_split_bundle(
        "fashion-mnist", train, test, num_classes=10, mean=(0.2860,), std=(0.3530,), opts=opts
    )


@DATASETS.register("cifar10")
def cifar10(opts: DataOptions) -> DataBundle:
    """CIFAR-10: 50k/10k 32x32 colour images, 10 classes (root/cifar-10-batches-py); crop+flip on train."""
    train, test = _load_cifar("cifar10", _CIFAR10Files, opts)
    return official_split_bundle(
        "cifar10",
        train,
        test,
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        opts=opts,
        augment=_cifar_augment(),
    )


@DATASETS.register("cifar100")
def cifar100(opts: DataOptions) -> DataBundle:
    """CIFAR-100: 50k/10k 32x32 colour images, 100 classes (root/cifar-100-python); crop+flip on train."""
    train, test = _load_cifar("cifar100", _CIFAR100Files, opts)
    return official_split_bundle(
        "cifar100",
        train,
        test,
        num_classes=100,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        opts=opts,
        augment=_cifar_augment(),
    )
