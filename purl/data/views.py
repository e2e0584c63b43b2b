"""Split views: one underlying dataset, several index subsets, each with its own transform.

The train split needs train-time augmentation while the reward-val and test splits need
plain eval transforms, yet they often come from the same stored dataset. Instead of
loading the data twice, each view holds a reference to the shared storage, its own
indices and its own transform. ``eval_view()`` returns the same indices without
augmentation, which :meth:`DataBundle.tensors` uses for the train split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset


class ImageTensorSplit(Dataset):
    """Rows ``indices`` of an in-memory image tensor, normalised, with optional train-time augmentation.

    ``images`` is ``(N, C, H, W)`` uint8 in 0..255 or float in [0, 1]; it is shared, never copied, between
    the views of one dataset. Items are ``(float32 (C, H, W) tensor, int label)`` like torchvision's.
    Kept in memory because the RL reward evaluates the val split thousands of times: ``as_tensors``
    normalises a whole split in one vectorised op instead of per-sample PIL round trips.
    """

    def __init__(
        self,
        images: Tensor,
        targets: Tensor,
        indices: np.ndarray | Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        augment: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        self.images = images
        self.targets = targets.long()
        self.indices = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.indices)

    def __repr__(self) -> str:
        shape = tuple(self.images.shape[1:])
        return f"ImageTensorSplit(n={len(self)}, shape={shape}, augment={self.augment is not None})"

    def _normalise(self, x: Tensor) -> Tensor:
        """uint8 -> [0, 1] float32, then per-channel (x - mean) / std; works on (C,H,W) and (N,C,H,W)."""
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        shape = (-1, 1, 1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return (x - mean) / std

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        j = int(self.indices[i])
        x = self.images[j]
        if self.augment is not None:
            x = self.augment(x)
        return self._normalise(x), int(self.targets[j])

    def eval_view(self) -> ImageTensorSplit:
        """The same samples without augmentation (eval transforms)."""
        if self.augment is None:
            return self
        return ImageTensorSplit(self.images, self.targets, self.indices.numpy(), self.mean, self.std, None)

    def as_tensors(self, device: torch.device, max_samples: int | None = None) -> tuple[Tensor, Tensor]:
        """The first ``max_samples`` (default: all) samples as (x float32, y int64) on ``device``."""
        idx = self.indices if max_samples is None else self.indices[:max_samples]
        # Move the compact (often uint8) images first and normalise on the target device.
        x = self._normalise(self.images[idx].to(device))
        y = self.targets[idx].to(device)
        return x.contiguous(), y


class TransformSubset(Dataset):
    """Rows ``indices`` of a dataset yielding raw samples (e.g. PIL images), with this view's transform.

    ``base`` must be built without a transform; ``transform`` is applied here so train and eval views
    of the same files can differ. ``eval_transform`` (default: ``transform``) is what ``eval_view`` uses.
    """

    def __init__(
        self,
        base: Dataset,
        indices: np.ndarray | Sequence[int],
        transform: Callable[[Any], Any] | None,
        eval_transform: Callable[[Any], Any] | None = None,
    ) -> None:
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.transform = transform
        self.eval_transform = transform if eval_transform is None else eval_transform

    def __len__(self) -> int:
        return len(self.indices)

    def __repr__(self) -> str:
        return f"TransformSubset(n={len(self)}, base={type(self.base).__name__})"

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        x, y = self.base[int(self.indices[i])]
        if self.transform is not None:
            x = self.transform(x)
        return x, y

    def eval_view(self) -> TransformSubset:
        """The same samples with the eval transform."""
        if self.eval_transform is self.transform:
            return self
        return TransformSubset(self.base, self.indices, self.eval_transform, self.eval_transform)
