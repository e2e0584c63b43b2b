"""ImageNet (ILSVRC-2012) in the standard ImageFolder layout: ``root/train/<wnid>/*``, ``root/val/<wnid>/*``.

Point ``data.root`` at the folder holding ``train/`` and ``val/``. ImageNet cannot be downloaded
automatically. The reward-val split is carved from ``train`` (``val_fraction`` of it); the official
``val`` folder is the test split (``test_fraction`` is ignored). Images stay on disk and are decoded
per sample; one ImageFolder index is shared by the train and reward-val views.
"""

from __future__ import annotations

from torchvision import datasets as tvd
from torchvision import transforms as T

from purl.data.bundle import DataBundle
from purl.data.registry import DATASETS, DataOptions
from purl.data.splits import holdout_indices, shuffled_indices, take
from purl.data.views import TransformSubset
from purl.errors import DataError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def imagenet_transforms() -> tuple[T.Compose, T.Compose]:
    """(train, eval) transforms: RandomResizedCrop(224)+flip; Resize(256)+CenterCrop(224). Both normalise."""
    normalise = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    train = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), *normalise])
    evaluate = T.Compose([T.Resize(256), T.CenterCrop(224), *normalise])
    return train, evaluate


def _image_folder(opts: DataOptions, part: str) -> tvd.ImageFolder:
    folder = opts.root / part
    if not folder.is_dir():
        raise DataError(
            f"dataset 'imagenet' not found: missing folder {folder}. ImageNet cannot be downloaded "
            f"automatically (data.download=true does not help); set data.root to a folder holding "
            f"train/<class>/*.JPEG and val/<class>/*.JPEG"
        )
    try:
        return tvd.ImageFolder(str(folder))  # no transform: views apply their own
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise DataError(f"dataset 'imagenet': cannot index {folder}: {exc}") from None


@DATASETS.register("imagenet")
def imagenet(opts: DataOptions) -> DataBundle:
    """ImageNet from root/train and root/val class folders (ImageFolder layout), 224x224 crops."""
    train_set, val_set = _image_folder(opts, "train"), _image_folder(opts, "val")
    if train_set.classes != val_set.classes:
        only_train = sorted(set(train_set.classes) - set(val_set.classes))[:5]
        only_val = sorted(set(val_set.classes) - set(train_set.classes))[:5]
        raise DataError(
            f"dataset 'imagenet': class folders of {opts.root / 'train'} and {opts.root / 'val'} differ "
            f"(only in train: {only_train}, only in val: {only_val}); both need the same class folders"
        )
    train_idx, val_idx = holdout_indices(len(train_set), opts.val_fraction, opts.seed)
    test_idx = shuffled_indices(len(val_set), opts.seed)
    train_idx, val_idx, test_idx = (take(i, opts.max_samples) for i in (train_idx, val_idx, test_idx))
    train_tf, eval_tf = imagenet_transforms()
    return DataBundle(
        name="imagenet",
        train=TransformSubset(train_set, train_idx, train_tf if opts.augment else eval_tf, eval_tf),
        val=TransformSubset(train_set, val_idx, eval_tf),
        test=TransformSubset(val_set, test_idx, eval_tf),
        input_shape=(3, 224, 224),
        num_classes=len(train_set.classes),
    )
