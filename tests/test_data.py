"""Tests of purl.data: splits, embedded datasets, DataBundle, and torchvision/ImageFolder readers.

The torchvision-backed datasets are exercised on tiny files written here in the real on-disk formats
(MNIST idx-ubyte, CIFAR python pickles, ImageFolder trees); nothing is ever downloaded.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image

from purl.data import DATASETS, DataBundle, build_data, list_datasets, split_indices
from purl.errors import DataError, PurlError

# ---------------------------------------------------------------- fixture writers (real formats)


def write_idx(path: Path, array: np.ndarray) -> None:
    """idx-ubyte file: big-endian magic 0x0000080N (N = ndim: 2051 images, 2049 labels), dims, then data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.tobytes())


def tagged_images(n: int, shape: tuple[int, ...], offset: int = 0) -> np.ndarray:
    """Random uint8 images whose first pixel encodes the sample number (offset + i), to trace samples."""
    images = np.random.default_rng(offset).integers(0, 256, size=(n, *shape), dtype=np.uint8)
    images.reshape(n, -1)[:, 0] = offset + np.arange(n)
    return images


def write_mnist(
    root: Path, folder: str = "MNIST", n_train: int = 40, n_test: int = 12
) -> dict[str, np.ndarray]:
    """<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte, uncompressed as torchvision reads them."""
    raw = root / folder / "raw"
    arrays = {
        "train-images-idx3-ubyte": tagged_images(n_train, (28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": tagged_images(n_test, (28, 28), offset=100),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) * 3) % 10,
    }
    for name, array in arrays.items():
        write_idx(raw / name, array)
    return arrays


def _pickle(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def write_cifar10(root: Path, per_batch: int = 6, n_test: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}: (N, 3072) uint8 rows + labels."""
    folder = root / "cifar-10-batches-py"
    train = tagged_images(5 * per_batch, (3, 32, 32))
    for b in range(5):
        rows = train[b * per_batch : (b + 1) * per_batch].reshape(per_batch, 3072)  # R, G, B planes per row
        labels = [(b * per_batch + i) % 10 for i in range(per_batch)]
        batch = {"batch_label": f"training batch {b + 1} of 5", "data": rows, "labels": labels}
        _pickle(folder / f"data_batch_{b + 1}", batch)
    test = tagged_images(n_test, (3, 32, 32), offset=200)
    test_labels = [i % 10 for i in range(n_test)]
    _pickle(folder / "test_batch", {"data": test.reshape(n_test, 3072), "labels": test_labels})
    _pickle(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)], "num_vis": 3072})
    return train, test


def write_cifar100(root: Path, n_train: int = 30, n_test: int = 8) -> None:
    """cifar-100-python/{train,test,meta} with fine and coarse labels."""
    folder = root / "cifar-100-python"
    for name, n, offset in (("train", n_train, 0), ("test", n_test, 150)):
        fine = [(7 * i + offset) % 100 for i in range(n)]
        data = tagged_images(n, (3, 32, 32), offset=offset).reshape(n, 3072)
        _pickle(folder / name, {"data": data, "fine_labels": fine, "coarse_labels": [f // 5 for f in fine]})
    meta = {
        "fine_label_names": [f"f{i}" for i in range(100)],
        "coarse_label_names": [f"k{i}" for i in range(20)],
    }
    _pickle(folder / "meta", meta)


def write_image_folder(
    root: Path, classes: tuple[str, ...] = ("ant", "bee", "cat"), per_class: int = 4
) -> None:
    """root/{train,val}/<class>/*.png|*.jpg tiny RGB images of varying sizes."""
    rng = np.random.default_rng(0)
    for part, count in (("train", per_class), ("val", 2)):
        for c in classes:
            folder = root / part / c
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                size = (12 + i, 9 + 2 * i)
                pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
                ext = "png" if i % 2 == 0 else "jpg"
                Image.fromarray(pixels).save(folder / f"img{i}.{ext}")


def decode_tag(x: torch.Tensor, mean: float, std: float) -> int:
    """Invert normalisation of the first pixel to recover the sample number written by tagged_images."""
    return round((float(x.reshape(-1)[0]) * std + mean) * 255)


# ---------------------------------------------------------------- splits


@pytest.mark.parametrize(
    ("n", "val", "test"), [(10, 0.1, 0.2), (1797, 0.1, 0.2), (1000, 0.33, 0.33), (7, 0.2, 0.2)]
)
def test_split_indices_disjoint_complete(n: int, val: float, test: float) -> None:
    train_idx, val_idx, test_idx = split_indices(n, val, test, seed=0)
    joined = np.concatenate([train_idx, val_idx, test_idx])
    assert sorted(joined.tolist()) == list(range(n))  # complete and disjoint
    assert len(val_idx) == max(1, round(n * val)) and len(test_idx) == max(1, round(n * test))
    assert all(a.dtype == np.int64 for a in (train_idx, val_idx, test_idx))


def test_split_indices_deterministic_by_seed() -> None:
    a, b = split_indices(500, 0.1, 0.2, seed=3), split_indices(500, 0.1, 0.2, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    c = split_indices(500, 0.1, 0.2, seed=4)
    assert not np.array_equal(a[1], c[1])


@pytest.mark.parametrize(
    ("val", "test"),
    [(0.0, 0.2), (1.0, 0.2), (-0.1, 0.2), (0.1, 1.5), (0.6, 0.4), (0.7, 0.5), (float("nan"), 0.1)],
)
def test_split_indices_bad_fractions(val: float, test: float) -> None:
    with pytest.raises(DataError, match="fraction"):
        split_indices(100, val, test, seed=0)


def test_split_indices_bad_type_and_too_few_samples() -> None:
    with pytest.raises(DataError, match="val_fraction"):
        split_indices(100, "lots", 0.2, seed=0)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="samples"):
        split_indices(2, 0.1, 0.2, seed=0)
    with pytest.raises(DataError, match="training"):
        split_indices(4, 0.4, 0.4, seed=0)


def test_build_data_validates_options() -> None:
    with pytest.raises(DataError, match="test_fraction"):
        build_data("digits", test_fraction=0.0)
    with pytest.raises(DataError, match="below 1"):
        build_data("digits", val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(DataError, match="max_samples"):
        build_data("digits", max_samples=0)


def test_unknown_dataset_lists_allowed_names() -> None:
    with pytest.raises(PurlError, match="allowed: .*digits"):
        build_data("no-such-set")


def test_list_datasets() -> None:
    names = list_datasets()
    assert {"digits", "mnist5k", "mnist", "fashion-mnist", "cifar10", "cifar100", "imagenet"} <= set(names)
    assert all(isinstance(d, str) and d for d in names.values())
    assert "digits" in DATASETS


# ---------------------------------------------------------------- embedded datasets


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return build_data("digits", seed=0)


def test_digits_shapes_and_sizes(digits: DataBundle) -> None:
    assert digits.name == "digits" and digits.input_shape == (1, 8, 8) and digits.num_classes == 10
    sizes = len(digits.train), len(digits.val), len(digits.test)
    assert sum(sizes) == 1797 and sizes[1] == round(1797 * 0.1) and sizes[2] == round(1797 * 0.2)
    x, y = digits.train[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32 and isinstance(y, int)
    # normalised with the whole-dataset mean/std
    xs = torch.cat([digits.tensors(s)[0] for s in ("train", "val", "test")])
    assert abs(float(xs.mean())) < 1e-3 and abs(float(xs.std()) - 1) < 1e-3


def test_tensors_cached_and_consistent(digits: DataBundle) -> None:
    x, y = digits.tensors("val")
    assert x.shape == (len(digits.val), 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    again = digits.tensors("val", device=torch.device("cpu"))
    assert again[0] is x and again[1] is y
    assert torch.equal(x[3], digits.val[3][0]) and int(y[3]) == digits.val[3][1]
    small = digits.tensors("val", max_samples=16)
    assert small[0].shape[0] == 16 and torch.equal(small[0], x[:16])
    assert digits.tensors("val", max_samples=16) is small
    digits.clear_cache()
    assert digits.tensors("val")[0] is not x


def test_loader_order_reproducible(digits: DataBundle) -> None:
    def labels(**kw: object) -> list[int]:
        return torch.cat([y for _, y in digits.loader("train", 64, **kw)]).tolist()  # type: ignore[arg-type]

    assert labels(seed=1) == labels(seed=1)
    assert labels(seed=1) != labels(seed=2)
    val_y = torch.cat([y for _, y in digits.loader("val", 50)])  # val/test not shuffled by default
    assert torch.equal(val_y, digits.tensors("val")[1])
    batches = list(digits.loader("train", 100, drop_last=True))
    assert len(batches) == len(digits.train) // 100 and batches[0][0].shape == (100, 1, 8, 8)


def test_bad_split_and_batch_size(digits: DataBundle) -> None:
    with pytest.raises(DataError, match="allowed: train, val, test"):
        digits.loader("validation", 8)
    with pytest.raises(DataError, match="allowed"):
        digits.tensors("holdout")
    with pytest.raises(DataError, match="batch_size"):
        digits.loader("train", 0)


def test_digits_split_changes_with_seed_and_max_samples() -> None:
    a, b = build_data("digits", seed=0), build_data("digits", seed=1)
    assert not torch.equal(a.tensors("val")[0], b.tensors("val")[0])
    c = build_data("digits", seed=0, max_samples=50)
    assert (len(c.train), len(c.val), len(c.test)) == (50, 50, 50)
    assert torch.equal(c.tensors("val")[0], a.tensors("val")[0][:50])


def test_mnist5k() -> None:
    data = build_data("mnist5k", seed=0)
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert len(data.train) + len(data.val) + len(data.test) == 5000
    assert (len(data.val), len(data.test)) == (500, 1000)
    x, y = data.tensors("test")
    assert x.shape == (1000, 1, 28, 28) and set(y.tolist()) == set(range(10))
    raw = x * 0.3081 + 0.1307  # MNIST normalisation undone -> [0, 1]
    assert float(raw.min()) > -1e-4 and float(raw.max()) < 1 + 1e-4


# ---------------------------------------------------------------- torchvision datasets from real-format files


@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_like_reads_idx_files(tmp_path: Path, name: str, folder: str) -> None:
    arrays = write_mnist(tmp_path, folder)
    data = build_data(name, root=tmp_path, val_fraction=0.25, seed=0)
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert (len(data.train), len(data.val), len(data.test)) == (30, 10, 12)
    mean, std = data.val.mean[0], data.val.std[0]  # type: ignore[attr-defined]
    # train + reward-val partition the official train file; test is the official test file
    tags = {s: [decode_tag(x, mean, std) for x in data.tensors(s)[0]] for s in ("train", "val", "test")}
    assert sorted(tags["train"] + tags["val"]) == list(range(40))
    assert sorted(tags["test"]) == list(range(100, 112))
    x, y = data.tensors("test")
    for xi, yi, tag in zip(x, y, tags["test"], strict=True):
        expected = torch.from_numpy(arrays["t10k-images-idx3-ubyte"][tag - 100]).float() / 255
        assert torch.allclose(xi[0] * std + mean, expected, atol=1e-5)
        assert int(yi) == arrays["t10k-labels-idx1-ubyte"][tag - 100]


def test_cifar10_reads_pickle_batches(tmp_path: Path) -> None:
    train, test = write_cifar10(tmp_path)
    data = build_data("cifar10", root=tmp_path, val_fraction=0.2, seed=1)
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10
    assert (len(data.train), len(data.val), len(data.test)) == (24, 6, 10)
    mean, std = torch.tensor(data.test.mean).view(3, 1, 1), torch.tensor(data.test.std).view(3, 1, 1)  # type: ignore
    x, y = data.tensors("test")
    for xi, yi in zip(x, y, strict=True):
        tag = decode_tag(xi, float(mean[0]), float(std[0]))
        expected = torch.from_numpy(test[tag - 200]).float() / 255  # CHW layout: R, G, B planes
        assert torch.allclose(xi * std + mean, expected, atol=1e-5) and int(yi) == (tag - 200) % 10
    seen = torch.cat([data.tensors("train")[0], data.tensors("val")[0]])
    tags = [decode_tag(xi, float(mean[0]), float(std[0])) for xi in seen]
    assert sorted(tags) == list(range(30))


def test_cifar_train_augmentation_only_on_train(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    data = build_data("cifar10", root=tmp_path, seed=0)
    clean = data.tensors("train")[0]  # eval transforms, even for the train split
    torch.manual_seed(0)
    augmented = torch.stack([data.train[i][0] for i in range(len(data.train))])
    assert augmented.shape == clean.shape and not torch.equal(augmented, clean)
    assert torch.equal(torch.stack([data.val[i][0] for i in range(len(data.val))]), data.tensors("val")[0])
    plain = build_data("cifar10", root=tmp_path, seed=0, augment=False)
    assert torch.equal(torch.stack([plain.train[i][0] for i in range(len(plain.train))]), clean)


def test_cifar100_reads_pickles(tmp_path: Path) -> None:
    write_cifar100(tmp_path)
    data = build_data("cifar100", root=tmp_path, val_fraction=0.1, seed=0)
    assert data.input_shape == (3, 32, 32) and data.num_classes == 100
    assert (len(data.train), len(data.val), len(data.test)) == (27, 3, 8)
    y = torch.cat([data.tensors(s)[1] for s in ("train", "val")])
    assert sorted(y.tolist()) == sorted((7 * i) % 100 for i in range(30))
    assert next(iter(data.loader("train", 5)))[0].shape == (5, 3, 32, 32)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("mnist", "MNIST/raw/train-images-idx3-ubyte"),
        ("fashion-mnist", "FashionMNIST/raw"),
        ("cifar10", "cifar-10-batches-py/data_batch_1"),
        ("cifar100", "cifar-100-python/train"),
    ],
)
def test_missing_files_raise_data_error(tmp_path: Path, name: str, expected: str) -> None:
    with pytest.raises(DataError) as info:
        build_data(name, root=tmp_path)
    message = str(info.value)
    assert expected in message and str(tmp_path) in message and "data.download=true" in message


def test_partially_missing_files(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError, match="test_batch"):
        build_data("cifar10", root=tmp_path)


def test_download_failure_is_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets as tvd

    def offline(self: object) -> None:
        raise URLError("network unreachable")

    monkeypatch.setattr(tvd.MNIST, "download", offline)
    with pytest.raises(DataError, match="downloading dataset 'mnist'.*failed"):
        build_data("mnist", root=tmp_path, download=True)


def test_corrupt_files_raise_data_error(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x00\x00garbage")
    with pytest.raises(DataError, match="corrupt"):
        build_data("mnist", root=tmp_path)
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="corrupt"):
        build_data("cifar10", root=tmp_path)


def test_labels_out_of_range_raise(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    write_idx(tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte", np.full(40, 12))
    with pytest.raises(DataError, match="labels"):
        build_data("mnist", root=tmp_path)


def test_max_samples_caps_official_splits(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    data = build_data("mnist", root=tmp_path, max_samples=5, seed=2)
    assert (len(data.train), len(data.val), len(data.test)) == (5, 4, 5)
    again = build_data("mnist", root=tmp_path, max_samples=5, seed=2)
    assert torch.equal(data.tensors("test")[0], again.tensors("test")[0])


# ---------------------------------------------------------------- ImageNet (ImageFolder layout)


def test_imagenet_image_folder(tmp_path: Path) -> None:
    write_image_folder(tmp_path)
    data = build_data("imagenet", root=tmp_path, val_fraction=0.25, seed=0)
    assert data.input_shape == (3, 224, 224) and data.num_classes == 3
    assert (len(data.train), len(data.val), len(data.test)) == (9, 3, 6)
    x, y = data.train[0]
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32 and 0 <= y < 3
    xv, yv = data.tensors("val")
    assert xv.shape == (3, 3, 224, 224) and yv.dtype == torch.int64
    assert data.tensors("val")[0] is xv
    xt, yt = data.tensors("train")  # eval transforms: deterministic
    assert torch.equal(xt, data.tensors("train", max_samples=100)[0])
    assert sorted(data.tensors("test")[1].tolist()) == [0, 0, 1, 1, 2, 2]


def test_imagenet_missing_and_mismatched_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="train"):
        build_data("imagenet", root=tmp_path)
    write_image_folder(tmp_path)
    (tmp_path / "val" / "cat").rename(tmp_path / "val" / "cow")
    with pytest.raises(DataError, match="differ"):
        build_data("imagenet", root=tmp_path)
    (tmp_path / "empty" / "train").mkdir(parents=True)
    (tmp_path / "empty" / "val").mkdir()
    with pytest.raises(DataError, match="class folder"):
        build_data("imagenet", root=tmp_path / "empty")
