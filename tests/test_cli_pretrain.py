"""``purl pretrain`` end to end, in process: outputs, the dense-model cache, and one-line user errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from purl.config import load_config

QUICK_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "quick.yaml"
RESULT_FIELDS = {"test_top1", "test_top5", "params", "dense_flops", "wall_time_s", "from_cache", "checkpoint"}


def pretrain(run_cli, out: Path, *overrides: str, device: str = "cpu"):
    return run_cli("pretrain", "--config", QUICK_CONFIG, "--device", device, "-q", "-o", out, *overrides)


def assert_one_line_error(result, *fragments: str) -> str:
    assert result.rc == 2, result
    assert "Traceback" not in result.err + result.out
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    line = lines[0]
    assert line.startswith("purl pretrain: error: ")
    for fragment in fragments:
        assert fragment in line
    return line


def test_pretrain_writes_results_and_config_then_uses_the_cache(run_cli, tmp_path: Path):
    overrides = [f"cache_dir={tmp_path / 'cache'}", "pretrain.epochs=1", "data.batch_size=128"]
    first = pretrain(run_cli, tmp_path / "run1", *overrides)
    assert first.rc == 0, first.err
    results = json.loads((tmp_path / "run1" / "results.json").read_text())
    assert set(results) >= RESULT_FIELDS
    assert 0.0 <= results["test_top1"] <= results["test_top5"] <= 100.0  # percent
    assert results["params"] == (64 * 256 + 256) + (256 * 128 + 128) + (128 * 10 + 10)  # mlp [256, 128] on 8x8
    assert results["prunable_params"] == 64 * 256 + 256 * 128 + 128 * 10
    assert results["dense_flops"] == 64 * 256 + 256 * 128 + 128 * 10  # MACs of the three Linear layers
    assert results["wall_time_s"] > 0 and results["from_cache"] is False
    assert (results["dataset"], results["model"], results["device"]) == ("digits", "mlp", "cpu")
    assert Path(results["checkpoint"]).is_file()
    assert Path(results["checkpoint"]).is_relative_to(tmp_path / "cache")
    assert "results.json" in first.out and "test top-1" in first.out

    saved = load_config(tmp_path / "run1" / "config.yaml")
    assert saved == load_config(QUICK_CONFIG, [*overrides, "device=cpu"])
    assert saved.pretrain.epochs == 1 and saved.cache_dir == str(tmp_path / "cache")

    second = pretrain(run_cli, tmp_path / "run2", *overrides)
    assert second.rc == 0, second.err
    cached = json.loads((tmp_path / "run2" / "results.json").read_text())
    assert cached["from_cache"] is True and "(from cache)" in second.out
    assert cached["checkpoint"] == results["checkpoint"]
    for key in ("test_top1", "test_top5", "params", "dense_flops", "pretrain_seconds"):
        assert cached[key] == results[key], key
    assert sorted(p.name for p in (tmp_path / "cache" / "dense").iterdir()) == [Path(results["checkpoint"]).name]

    retrained = run_cli("pretrain", "--config", QUICK_CONFIG, "--device", "cpu", "-q", "--retrain",
                        "-o", tmp_path / "run3", *overrides)
    assert retrained.rc == 0 and json.loads((tmp_path / "run3" / "results.json").read_text())["from_cache"] is False


def test_device_cuda_without_cuda_exits_2(run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    if torch.cuda.is_available():  # on a GPU machine, pretend there is none to see the same user error
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = pretrain(run_cli, tmp_path / "out", f"cache_dir={tmp_path / 'cache'}", device="cuda")
    assert_one_line_error(result, "'cuda'", "CUDA is not available", "--device cpu")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("prune.sparsity=1.5", ["prune.sparsity", "1.5"]),
        ("finetune.lr=-1", ["finetune.lr"]),
        ("prune.sparsty=0.5", ["prune.sparsty", "allowed", "sparsity"]),
        ("pretrain.epochs=lots", ["pretrain.epochs", "lots"]),
        ("no-equals-sign", ["no-equals-sign", "key.sub=value"]),
        ("model.name=nosuchnet", ["unknown model 'nosuchnet'", "allowed", "mlp", "resnet-20"]),
        ("data.name=nosuchdata", ["unknown dataset 'nosuchdata'", "allowed", "digits", "mnist5k"]),
        ("model.kwargs={depth: 3}", ["depth", "mlp", "hidden"]),
    ],
)
def test_bad_override_exits_2_with_one_line(run_cli, tmp_path: Path, override: str, fragments: list[str]):
    result = pretrain(run_cli, tmp_path / "out", f"cache_dir={tmp_path / 'cache'}", override)
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "out" / "results.json").exists()
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.pt"))


def test_bad_device_name_and_missing_config_file(run_cli, tmp_path: Path):
    assert_one_line_error(pretrain(run_cli, tmp_path / "o", device="gpu"), "'device'", "cuda:N")
    result = run_cli("pretrain", "--config", tmp_path / "nope.yaml", "-o", tmp_path / "o")
    assert_one_line_error(result, "nope.yaml", "does not exist")


def test_argparse_errors_exit_2(run_cli):
    assert run_cli("pretrain", "--no-such-flag").rc == 2
    assert run_cli("no-such-command").rc == 2


def test_resolve_device():
    from purl.errors import ConfigError
    from purl.runtime import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="allowed: auto, cpu, cuda, cuda:N"):
        resolve_device("tpu")
    with pytest.raises(ConfigError, match="cuda:99"):
        resolve_device("cuda:99")


def test_output_that_is_a_file_exits_2(run_cli, tmp_path: Path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    result = pretrain(run_cli, blocker, f"cache_dir={tmp_path / 'cache'}")
    assert_one_line_error(result, "cannot create output folder", "file.txt")
    assert blocker.read_text() == "not a folder"
