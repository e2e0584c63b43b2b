"""Checkpoints: safe round trip with masks and config, corrupt files as CheckpointError, atomic writes."""

from __future__ import annotations

import contextlib
import os
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from purl.checkpoint import FORMAT, atomic_write_bytes, load_checkpoint, load_weights, save_checkpoint
from purl.config import load_config
from purl.errors import CheckpointError, PurlError
from purl.pruning import MaskState

QUICK_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "quick.yaml"


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, nn.Module, MaskState, dict]:
    model = net()
    model(torch.randn(8, 1, 6, 6))  # non-trivial BatchNorm running stats
    masks = MaskState(model)
    masks.prune_layers({"0": 0.5, "4": 0.75})
    config = load_config(QUICK_CONFIG).to_dict()
    path = save_checkpoint(tmp_path / "sub" / "model.pt", model, config=config, masks=masks.state_dict(),
                           meta={"test_top1": 0.5, "note": "x", "steps": [1, 2]})
    return path, model, masks, config


def test_round_trip_with_masks_config_and_meta(saved):
    path, model, masks, config = saved
    payload = load_checkpoint(path)
    assert payload["format"] == FORMAT
    assert payload["config"] == config
    assert payload["meta"] == {"test_top1": 0.5, "note": "x", "steps": [1, 2]}
    assert payload["state_dict"].keys() == model.state_dict().keys()
    assert all(torch.equal(v, payload["state_dict"][k]) for k, v in model.state_dict().items())
    assert all(torch.equal(v, payload["masks"][k]) for k, v in masks.state_dict().items())

    fresh = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
    load_weights(fresh, payload, path)
    fresh_masks = MaskState(fresh)
    fresh_masks.load_state_dict(payload["masks"])
    assert fresh_masks.pruned() == masks.pruned()
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in model.state_dict().items())


def test_loads_with_plain_torch_load_weights_only(saved):
    path, model, _, config = saved
    payload = torch.load(path, weights_only=True)
    assert payload["config"] == config and set(payload) == {"format", "state_dict", "masks", "config", "meta"}
    assert all(t.device.type == "cpu" for t in payload["state_dict"].values())


def test_checkpoint_without_masks(tmp_path: Path):
    path = save_checkpoint(tmp_path / "dense.pt", net(), config={})
    payload = load_checkpoint(path)
    assert payload["masks"] is None and payload["meta"] == {}


def test_weights_saved_from_another_device_load_on_cpu(tmp_path: Path, device):
    model = net().to(device)
    path = save_checkpoint(tmp_path / "m.pt", model, config={})
    payload = load_checkpoint(path)
    assert all(t.device.type == "cpu" for t in payload["state_dict"].values())


# ------------------------------------------------------------------------------------ corrupt files


def assert_corrupt(path: Path) -> None:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, PurlError)


def test_missing_file(tmp_path: Path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_truncated_files(saved):
    path, *_ = saved
    data = path.read_bytes()
    bad = path.with_name("bad.pt")
    for n in sorted({0, 1, 2, 10, 64, len(data) // 3, len(data) // 2, len(data) - 100, len(data) - 1}):
        bad.write_bytes(data[:n])
        assert_corrupt(bad)


def test_corrupted_bytes_in_a_real_checkpoint(saved):
    path, *_ = saved
    data = bytearray(path.read_bytes())
    gen = torch.Generator().manual_seed(0)
    bad = path.with_name("bad.pt")
    for _ in range(30):
        copy = bytearray(data)
        for pos in torch.randint(0, len(data), (8,), generator=gen).tolist():
            copy[pos] ^= 0xFF
        bad.write_bytes(bytes(copy))
        with contextlib.suppress(CheckpointError):  # a flip in padding may go unnoticed; no other error type
            load_checkpoint(bad)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=150)
@given(data=st.binary(max_size=300), prefix=st.sampled_from([b"", b"\x80\x02", b"\x80\x04", b"PK\x03\x04"]))
def test_random_bytes_are_a_checkpoint_error(tmp_path: Path, data: bytes, prefix: bytes):
    path = tmp_path / "random.pt"
    path.write_bytes(prefix + data)
    assert_corrupt(path)


def test_other_torch_files_are_rejected(tmp_path: Path):
    path = tmp_path / "other.pt"
    torch.save({"a": torch.ones(2)}, path)
    with pytest.raises(CheckpointError, match="not a PuRL checkpoint"):
        load_checkpoint(path)
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not a PuRL checkpoint"):
        load_checkpoint(path)
    torch.save({"format": FORMAT, "state_dict": "nope"}, path)
    with pytest.raises(CheckpointError, match="not a PuRL checkpoint"):
        load_checkpoint(path)
    torch.save(net(), path)  # a pickled module: refused by weights_only loading
    assert_corrupt(path)
    with zipfile.ZipFile(path, "w") as archive:  # a zip, but not a torch archive
        archive.writestr("hello.txt", "hi")
    assert_corrupt(path)


def test_weights_of_another_model_are_a_checkpoint_error(saved):
    path, *_ = saved
    payload = load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not match the configured model"):
        load_weights(nn.Sequential(nn.Linear(3, 3)), payload, path)
    wrong_shape = nn.Sequential(nn.Conv2d(1, 5, 3), nn.BatchNorm2d(5), nn.ReLU(), nn.Flatten(), nn.Linear(80, 3))
    with pytest.raises(CheckpointError, match="does not match"):
        load_weights(wrong_shape, payload, path)


def test_corrupt_cached_dense_model_at_cli_level(run_cli, make_config, tmp_path: Path):
    from purl.task import dense_checkpoint_path

    overrides = [f"cache_dir={tmp_path / 'cache'}", "pretrain.epochs=1"]
    cached = dense_checkpoint_path(make_config(*overrides))
    cached.parent.mkdir(parents=True)
    cached.write_bytes(os.urandom(1000))
    result = run_cli("pretrain", "--config", QUICK_CONFIG, "-q", "--device", "cpu", "-o", tmp_path / "out",
                     *overrides)
    assert result.rc == 2
    assert "Traceback" not in result.err + result.out
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("purl pretrain: error: checkpoint") and "corrupt" in lines[0]
    assert not (tmp_path / "out" / "results.json").exists()


# ------------------------------------------------------------------------------------ atomic writes


def test_failed_write_leaves_the_old_file_intact(tmp_path: Path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old contents")

    def failing(handle) -> None:
        handle.write(b"new partial contents")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(path, failing)
    assert path.read_bytes() == b"old contents"
    assert os.listdir(tmp_path) == ["file.bin"]  # no temporary file left behind


def test_interrupted_write_leaves_the_old_file_intact(tmp_path: Path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old")

    def interrupted(handle) -> None:
        handle.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(path, interrupted)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["file.bin"]


def test_failed_checkpoint_save_keeps_the_previous_checkpoint(saved):
    path, model, masks, _ = saved
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017  (pickling a lambda fails with a type that depends on torch)
        save_checkpoint(path, model, config={"bad": lambda: None})
    assert path.read_bytes() == before
    assert load_checkpoint(path)["meta"]["note"] == "x"
    assert sorted(os.listdir(path.parent)) == ["model.pt"]


def test_successful_write_replaces_and_creates_parents(tmp_path: Path):
    path = tmp_path / "a" / "b" / "file.bin"
    atomic_write_bytes(path, lambda handle: handle.write(b"one"))
    atomic_write_bytes(path, lambda handle: handle.write(b"two"))
    assert path.read_bytes() == b"two" and os.listdir(path.parent) == ["file.bin"]


# ------------------------------------------------------------------------------ dense-model cache path


@pytest.mark.parametrize(("data", "model"), [("digits", "mlp"), ("my.pkg:data", "torchvision:resnet18"),
                                             ("a/b", "pkg.mod:Net")])
def test_dense_cache_is_one_plain_file_in_cache_dir(make_config, data, model):
    from purl.task import dense_checkpoint_path

    config = make_config(f"data.name={data}", f"model.name={model}")
    path = dense_checkpoint_path(config)
    assert path.parent == Path(config.cache_dir) / "dense"
    assert ":" not in path.name and path.suffix == ".pt"
    assert path.name.endswith(f"-seed0-{config.task_key()}.pt")
    assert dense_checkpoint_path(make_config(f"data.name={data}", f"model.name={model}", "seed=1")) != path
