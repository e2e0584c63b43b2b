"""Dataset registry and the single entry point ``build_data``.

A dataset is a builder ``fn(opts: DataOptions) -> DataBundle`` registered under a name with
``@DATASETS.register("name")``; its docstring's first line is the description shown by
``list_datasets``. ``build_data`` also accepts ``"package.module:function"`` for user builders.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from purl.data.bundle import DataBundle
from purl.data.splits import check_fraction, check_max_samples
from purl.errors import DataError
from purl.registry import Registry

DEFAULT_ROOT = "~/.cache/purl/data"


@dataclass(frozen=True)
class DataOptions:
    """Validated arguments of :func:`build_data`, passed to every dataset builder."""

    root: Path
    download: bool = False
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    max_samples: int | None = None
    augment: bool = True


DatasetBuilder = Callable[[DataOptions], DataBundle]

DATASETS: Registry[DatasetBuilder] = Registry("dataset")


def build_data(
    name: str,
    *,
    root: str | Path = DEFAULT_ROOT,
    download: bool = False,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    max_samples: int | None = None,
    augment: bool = True,
) -> DataBundle:
    """Build the :class:`DataBundle` of dataset ``name`` (see :func:`list_datasets`).

    Splits are deterministic in ``seed``. Embedded datasets (no official split) are split three ways by
    ``val_fraction`` / ``test_fraction``; datasets with an official train/test split carve the reward-val
    split (``val_fraction`` of it) out of the official train set, use the official test set as test and
    ignore ``test_fraction``. ``max_samples`` caps every split (a seeded random subset) for quick runs.
    ``augment=False`` gives the train split eval transforms. Nothing is downloaded unless ``download``.
    """
    builder = DATASETS.get(name)
    opts = DataOptions(
        root=Path(root).expanduser(),
        download=bool(download),
        seed=int(seed),
        val_fraction=check_fraction("val_fraction", val_fraction),
        test_fraction=check_fraction("test_fraction", test_fraction),
        max_samples=check_max_samples(max_samples),
        augment=bool(augment),
    )
    bundle = builder(opts)
    if not isinstance(bundle, DataBundle):
        raise DataError(f"dataset builder '{name}' returned {type(bundle).__name__}, expected a DataBundle")
    return bundle


def list_datasets() -> dict[str, str]:
    """Registered dataset names mapped to one-line descriptions."""
    return DATASETS.describe()
