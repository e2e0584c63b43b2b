"""DataBundle: the three splits of one dataset plus the metadata models need."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from purl.errors import DataError

SPLITS = ("train", "val", "test")


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise DataError(f"unknown data split '{split}'; allowed: {', '.join(SPLITS)}")
    return split


@dataclass
class DataBundle:
    """Train / reward-val / test splits of a dataset, its input shape and class count.

    ``train`` is for fine-tuning (with train-time augmentation, if any). ``val`` is the reward-validation
    split: the ONLY data an RL reward may look at. ``test`` is for reporting only, never for decisions.
    """

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    input_shape: tuple[int, int, int]
    num_classes: int
    _cache: dict[tuple[str, torch.device, int | None], tuple[Tensor, Tensor]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def split(self, split: str) -> Dataset:
        """The dataset of ``split`` ("train", "val" or "test")."""
        return getattr(self, _check_split(split))

    def loader(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool | None = None,
        seed: int = 0,
        num_workers: int = 0,
        drop_last: bool = False,
        pin_memory: bool = False,
    ) -> DataLoader:
        """A DataLoader over ``split``; shuffles by default only for train, in an order fixed by ``seed``.

        The order comes from a ``torch.Generator`` seeded with ``seed`` (also the source of worker seeds),
        so two loaders with the same seed yield the same batches, independent of the global RNG.
        """
        dataset = self.split(split)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
        if shuffle is None:
            shuffle = split == "train"
        generator = torch.Generator()
        generator.manual_seed(int(seed))
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            generator=generator,
            num_workers=num_workers,
            drop_last=drop_last,
            pin_memory=pin_memory,
        )

    def tensors(
        self, split: str, device: torch.device | str = "cpu", max_samples: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """The whole ``split`` (eval transforms, no augmentation) as ``(x float32, y int64)`` on ``device``.

        Cached per ``(split, device, max_samples)``: repeated calls return the same tensors at no cost,
        which is what the RL environment relies on to evaluate the val split every step. With
        ``max_samples`` only the first that many samples of the split (a random subset, since splits are
        stored in seeded random order) are returned. Mind memory for large splits such as ImageNet's.
        """
        dataset = self.split(split)
        if max_samples is not None and (isinstance(max_samples, bool) or max_samples < 1):
            raise DataError(f"max_samples must be a positive integer or None, got {max_samples!r}")
        dev = torch.device(device)
        key = (split, dev, max_samples)
        if key not in self._cache:
            self._cache[key] = _stack(dataset, dev, max_samples)
        return self._cache[key]

    def clear_cache(self) -> None:
        """Drop tensors cached by :meth:`tensors` (e.g. to free GPU memory)."""
        self._cache.clear()


def _stack(dataset: Dataset, device: torch.device, max_samples: int | None) -> tuple[Tensor, Tensor]:
    """Materialise a split with eval transforms, using the vectorised path when the view offers one."""
    eval_view = getattr(dataset, "eval_view", None)
    if callable(eval_view):
        dataset = eval_view()
    as_tensors = getattr(dataset, "as_tensors", None)
    if callable(as_tensors):
        x, y = as_tensors(device, max_samples)
        return x.float(), y.long()
    n = len(dataset)  # type: ignore[arg-type]
    if max_samples is not None and max_samples < n:
        dataset = Subset(dataset, range(max_samples))
    xs, ys = [], []
    for x, y in DataLoader(dataset, batch_size=256, shuffle=False):
        xs.append(torch.as_tensor(x).float())
        ys.append(torch.as_tensor(y).long())
    if not xs:
        raise DataError("cannot stack an empty data split")
    return torch.cat(xs).to(device), torch.cat(ys).to(device)
