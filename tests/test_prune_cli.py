"""`purl prune`: every method on the quick task, results.json fields, a loadable pruned checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

FAST = ["pretrain.epochs=3", "finetune.max_steps=5"]
FIELDS = ("method", "target_sparsity", "achieved_sparsity", "layer_sparsity", "before_test_top1", "before_test_top5",
          "after_test_top1", "after_test_top5", "dense_flops", "sparse_flops", "compression_ratio",
          "theoretical_speedup", "collapsed_layers", "wall_time_s", "checkpoint")


def _prune(run_cli, tmp_path: Path, *args: str):
    out = tmp_path / "out"
    result = run_cli("prune", "--config", "configs/quick.yaml", "-q", "--device", "cpu", "-o", str(out),
                     f"cache_dir={tmp_path.parent / 'shared-cache'}", *FAST, *args)
    return result, out


@pytest.mark.parametrize("method", ["global-mp", "uniform", "erk", "lamp", "random"])
def test_every_method_prunes_exactly_and_writes_results(run_cli, tmp_path: Path, method: str) -> None:
    result, out = _prune(run_cli, tmp_path, "--method", method, "--sparsity", "0.8")
    assert result.rc == 0, result.err
    results = json.loads((out / "results.json").read_text())
    for field in FIELDS:
        assert field in results, field
    assert results["method"] == method and results["achieved_sparsity"] == pytest.approx(0.8, abs=1e-4)
    payload = torch.load(out / "pruned.pt", weights_only=True)
    for name, mask in payload["masks"].items():
        weight = payload["state_dict"][f"{name}.weight"]
        assert torch.all(weight[~mask] == 0)
        assert 1 - mask.float().mean().item() == pytest.approx(results["layer_sparsity"][name])


def test_min_threshold_and_gradual_schedule(run_cli, tmp_path: Path) -> None:
    result, out = _prune(run_cli, tmp_path, "--method", "global-mp", "--sparsity", "0.96", "--min-threshold", "1",
                         "--schedule", "gradual")
    assert result.rc == 0, result.err
    results = json.loads((out / "results.json").read_text())
    assert results["schedule"] == "gradual" and results["min_threshold"] == 1.0
    assert results["achieved_sparsity"] == pytest.approx(0.96, abs=1e-4) and results["collapsed_layers"] == []
    assert results["before_test_top1"] is None  # pruned during fine-tuning: no one-shot "before" accuracy


def test_layerwise_map_is_applied_as_given(run_cli, tmp_path: Path) -> None:
    result, out = _prune(run_cli, tmp_path, "--method", "layerwise",
                         "prune.method_kwargs={sparsities: {fc1: 0.5, fc2: 0.75, fc3: 0.25}}")
    assert result.rc == 0, result.err
    layers = json.loads((out / "results.json").read_text())["layer_sparsity"]
    assert layers == pytest.approx({"fc1": 0.5, "fc2": 0.75, "fc3": 0.25}, abs=1e-3)


@pytest.mark.parametrize(("args", "message"), [
    (["--method", "globl-mp"], "unknown allocator 'globl-mp'"),
    (["--sparsity", "1.5"], "prune.sparsity"),
    (["--method", "uniform-plus", "--sparsity", "0.95"], "not reachable"),
])
def test_bad_requests_exit_2_with_one_line(run_cli, tmp_path: Path, args: list[str], message: str) -> None:
    result, out = _prune(run_cli, tmp_path, *args)
    assert result.rc == 2 and message in result.err and "Traceback" not in result.err
    assert not (out / "results.json").exists()
