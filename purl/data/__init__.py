"""Datasets for PuRL: train / reward-val / test splits behind one call, ``build_data(name)``.

The reward-val split is the only data an RL reward may see; test is reported only. Importing this
package registers the built-in datasets (see :func:`list_datasets`).
"""

from purl.data.bundle import DataBundle
from purl.data.registry import DATASETS, DataOptions, build_data, list_datasets
from purl.data.splits import split_indices

# Imported for their @DATASETS.register side effects.
from purl.data import embedded, imagenet, torchvision_sets  # noqa: E402,F401  isort: skip

__all__ = ["DATASETS", "DataBundle", "DataOptions", "build_data", "list_datasets", "split_indices"]
