"""Channel granularity through the config, `purl prune` and `purl compare` (issue #14, wiring).

The slimmed model is written and reloads (checkpoint + keep plan, .pt2, .onnx) with the reported accuracy,
FLOPs budgets land within one channel's cost, measured columns reach results.csv, and requests the channel
path cannot serve are one clear line before any work.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

import purl.baselines.channel as channel_allocators
from purl.baselines.channel import DEPRECATED_ALIASES, channel_tolerance, get_channel_allocator
from purl.compare import ResultsTable
from purl.config import CHANNEL_ALIASES, ExperimentConfig, config_differences, load_config
from purl.pruning.channels import channel_graph, prune_channels
from purl.task import build_task

CHANNEL = ["prune.granularity=channel", "prune.budget_metric=flops"]
FAST = ["pretrain.epochs=3", "finetune.max_steps=5"]
RESNET_TINY = ["data.max_samples=400", "pretrain.max_steps=6", "finetune.max_steps=4", "data.eval_batch_size=256"]


def _prune(run_cli, tmp_path: Path, *args: str, config: str = "configs/quick.yaml", extra: list[str] = FAST):
    out = tmp_path / "out"
    result = run_cli("prune", "--config", config, "-q", "--device", "cpu", "-o", str(out),
                     f"cache_dir={tmp_path.parent / 'channel-cache'}", *extra, *args)
    return result, out


def _test_accuracy(module, task) -> float:
    hits = total = 0
    with torch.no_grad():
        for x, y in task.loader("test"):
            hits += int((module(x).argmax(1) == y).sum())
            total += len(y)
    return 100.0 * hits / total


def _check_budget(results: dict, config: ExperimentConfig, keep_ratio: float) -> None:
    task = build_task(config, torch.device("cpu"), progress=False)
    graph = channel_graph(task.model, torch.zeros(1, *task.data.input_shape))
    tolerance = channel_tolerance(graph, "flops") / graph.dense_macs
    assert results["dense_flops"] == graph.dense_macs
    assert keep_ratio - tolerance - 1e-9 <= results["flops_ratio"] <= keep_ratio + 1e-9
    assert results["sparse_flops"] / results["dense_flops"] == pytest.approx(results["flops_ratio"])
    assert results["achieved_sparsity"] == pytest.approx(1 - results["flops_ratio"])


def test_prune_channel_mlp_writes_a_slim_model_that_reloads_with_the_reported_accuracy(run_cli, tmp_path: Path):
    result, out = _prune(run_cli, tmp_path, *CHANNEL, "--method", "global-mp", "--sparsity", "0.5")
    assert result.rc == 0, result.err
    assert "deprecated" not in result.err
    results = json.loads((out / "results.json").read_text())
    for key in ("granularity", "budget_metric", "params_ratio", "flops_ratio", "before_test_top1", "after_test_top1",
                "latency_ratio_b1", "latency_ratio_b64", "channel_keep", "exports"):
        assert key in results, key
    assert results["granularity"] == "channel" and results["budget_metric"] == "flops"
    assert results["latency_ratio_b1"] > 0 and results["latency_ratio_b64"] > 0
    config = load_config("configs/quick.yaml", [f"cache_dir={tmp_path.parent / 'channel-cache'}", "device=cpu",
                                                *FAST, *CHANNEL])
    _check_budget(results, config, 0.5)
    task = build_task(config, torch.device("cpu"), progress=False)

    # pruned.pt: weights_only, the slimmed state_dict fits the dense architecture pruned to the keep plan
    payload = torch.load(out / "pruned.pt", weights_only=True)
    assert payload["masks"] is None and payload["meta"]["channel_keep"] == results["channel_keep"]
    example = torch.zeros(1, *task.data.input_shape)
    rebuilt = prune_channels(task.model, example, payload["meta"]["channel_keep"]).eval()
    rebuilt.load_state_dict(payload["state_dict"])
    assert sum(p.numel() for p in rebuilt.parameters()) == results["nonzero_params"]
    assert _test_accuracy(rebuilt, task) == pytest.approx(results["after_test_top1"], abs=1e-6)

    # the exports reload with torch / onnxruntime alone and give the same accuracy
    program = torch.export.load(str(out / "pruned.pt2")).module()
    assert _test_accuracy(program, task) == pytest.approx(results["after_test_top1"], abs=1e-6)
    session = ort.InferenceSession(str(out / "pruned.onnx"), providers=["CPUExecutionProvider"])
    x, _ = next(iter(task.loader("test")))
    onnx_out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(onnx_out, rebuilt(x).numpy(), atol=1e-4)
    assert "Traceback" not in result.err


def test_prune_channel_resnet20_flops_budget_lands_and_exports(run_cli, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(channel_allocators, "_NOTIFIED", set())  # the notice is once per process; run_cli is in it
    extra = [*RESNET_TINY, "prune.measure_latency=false"]
    result, out = _prune(run_cli, tmp_path, *CHANNEL, "--method", "channel-uniform", "--sparsity", "0.5",
                         config="configs/mnist5k-resnet20.yaml", extra=extra)
    assert result.rc == 0, result.err
    # the old channel-only name still runs, with one line naming the new one
    assert "note: method 'channel-uniform' is deprecated; use 'uniform' with prune.granularity=channel" in result.err
    results = json.loads((out / "results.json").read_text())
    config = load_config("configs/mnist5k-resnet20.yaml", [f"cache_dir={tmp_path.parent / 'channel-cache'}",
                                                           "device=cpu", *extra, *CHANNEL])
    _check_budget(results, config, 0.5)
    assert "latency_ratio" not in results  # opt-out honoured
    assert 0 <= results["after_test_top1"] <= 100
    program = torch.export.load(str(out / "pruned.pt2")).module()
    x = torch.randn(3, 1, 28, 28)
    payload = torch.load(out / "pruned.pt", weights_only=True)
    task = build_task(config, torch.device("cpu"), progress=False)
    rebuilt = prune_channels(task.model, torch.zeros(1, 1, 28, 28), payload["meta"]["channel_keep"]).eval()
    rebuilt.load_state_dict(payload["state_dict"])
    with torch.no_grad():
        torch.testing.assert_close(program(x), rebuilt(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("args", "message"), [
    (["prune.granularity=chanel"], "'prune.granularity': Input should be 'weight' or 'channel'"),
    (["prune.granularity=channel", "prune.channel_norm=l3"], "'prune.channel_norm'"),
    (["prune.granularity=channel", "prune.budget_metric=macs"], "'prune.budget_metric'"),
    (["prune.budget_metric=flops", "--schedule", "gradual"], "schedule 'gradual' with budget_metric 'flops'"),
    (["prune.granularity=channel", "--method", "layerwise"], "allocator 'layerwise' needs the option(s) sparsities"),
    (["prune.granularity=channel", "--method", "uniform-plus"], "'uniform-plus' has no channel version"),
    (["prune.granularity=channel", "--method", "uniform", "--schedule", "gradual"],
     "not supported at granularity 'channel'"),
    (["prune.granularity=channel", "--method", "uniform", "--min-threshold", "1"], "prune.min_channels"),
    (["--method", "channel-global-mp"], "set prune.granularity=channel"),
])
def test_bad_channel_requests_are_one_line_before_any_work(run_cli, tmp_path: Path, args: list[str], message: str):
    result, out = _prune(run_cli, tmp_path, *args)
    assert result.rc == 2 and message in result.err, result.err
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1
    assert not out.exists()


def test_channel_target_below_the_constraints_is_one_line(run_cli, tmp_path: Path):
    result, out = _prune(run_cli, tmp_path, "prune.granularity=channel", "--method", "uniform",
                         "prune.min_channels=100", "--sparsity", "0.9")
    assert result.rc == 2 and "below what the constraints allow" in result.err and "min_channels" in result.err
    assert "Traceback" not in result.err and not (out / "results.json").exists()


def _compare(run_cli, tmp_path: Path, out: Path, methods: str, *extra: str):
    return run_cli("compare", "--config", "configs/quick.yaml", "-q", "--device", "cpu", "-o", str(out),
                   f"cache_dir={tmp_path / 'cache'}", *FAST, "compare.sparsities=[0.5,0.75]", "compare.seeds=[0]",
                   "compare.profile_sparsity=0.5", *CHANNEL, f"compare.methods={methods}", *extra)


def test_compare_channel_grid_writes_measured_columns(run_cli, tmp_path: Path):
    out = tmp_path / "cmp"
    result = _compare(run_cli, tmp_path, out, "[global-mp,uniform]", "compare.measure_latency=true")
    assert result.rc == 0, result.err
    rows = ResultsTable.read(out / "results.csv")
    assert sorted((r["label"], r["target_sparsity"]) for r in rows) == [
        ("global-mp", 0.5), ("global-mp", 0.75), ("uniform", 0.5), ("uniform", 0.75)]
    for row in rows:
        assert row["status"] == "ok" and row["granularity"] == "channel" and row["budget_metric"] == "flops"
        assert row["flops_ratio"] <= 1 - row["target_sparsity"] + 1e-9
        assert row["flops_ratio"] > 1 - row["target_sparsity"] - 0.02  # one hidden unit of the MLP: < 1%
        assert row["sparse_flops"] / row["dense_flops"] == pytest.approx(row["flops_ratio"])
        assert 0 < row["params_ratio"] < 1 and row["latency_ratio"] > 0
        assert row["nonzero_params"] < row["total_params"]
    summary = (out / "summary.md").read_text()
    assert "kept FLOPs" in summary and "CPU latency / dense" in summary and "removed fraction of budget" in summary
    # every cell leaves its deployable slimmed model, reloadable without PuRL, as small as reported
    cells = sorted((out / "cells").glob("*/pruned.pt2"))
    assert len(cells) == 4 and all(c.with_suffix(".onnx").is_file() for c in cells)
    program = torch.export.load(str(cells[0])).module()
    n_params = sum(p.numel() for p in program.parameters())
    assert n_params < rows[0]["total_params"]  # fewer (incl. biases) than the dense prunable weights
    assert program(torch.zeros(3, 1, 8, 8)).shape[0] == 3  # dynamic batch
    # benchmarks/bench_cell_latency.py re-times the exported cells of the folder against its dense model
    bench = subprocess.run([sys.executable, "benchmarks/bench_cell_latency.py", str(out), "--repeats", "2",
                            "--warmup", "0", "--batches", "1,4"], capture_output=True, text=True, timeout=300)
    assert bench.returncode == 0, bench.stderr
    timed = list(csv.DictReader((out / "cell_latency.csv").open()))
    assert len(timed) == 4 * 2 * 2 and all(float(t["latency_ratio"]) > 0 for t in timed)  # cells x batches x runtimes
    assert {t["runtime"] for t in timed} == {"eager", "onnxruntime"} and "latency ratio" in bench.stdout
    # without the opt-in there is no latency column value
    out2 = tmp_path / "cmp2"
    assert _compare(run_cli, tmp_path, out2, "[uniform]").rc == 0
    assert all(r["latency_ratio"] is None for r in ResultsTable.read(out2 / "results.csv"))


@pytest.mark.parametrize(("methods", "extra", "message"), [
    ("[agent,uniform]", ["env.action=sigma"], "env.action 'sigma' thresholds individual weights"),
    ("[agent,uniform]", ["env.finetune_steps=2"], "env.finetune_steps > 0 is not supported"),
    ("[agent,uniform]", ["env.prior=uniform-plus"], "env.prior 'uniform-plus' has no channel version"),
    ("[agent,uniform]", ["env.budget_metric=params"], "differs from prune.budget_metric 'flops'"),
    ("[agent]", ["constraints.min_threshold=0.1"], "method 'agent': the Minimum Threshold (min_threshold) is a"),
    ("[uniform,uniform-plus]", [], "'uniform-plus' has no channel version"),
])
def test_compare_channel_refuses_unsupported_methods_before_any_work(run_cli, tmp_path: Path, methods: str,
                                                                     extra: list[str], message: str):
    out = tmp_path / "cmp"
    result = _compare(run_cli, tmp_path, out, methods, *extra)
    assert result.rc == 2 and message in result.err, result.err
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1
    assert not out.exists() and not (tmp_path / "cache").exists()  # nothing pre-trained, nothing written


def test_config_channel_names_match_the_allocators_and_new_keys_keep_old_folders_resumable():
    assert set(CHANNEL_ALIASES) == set(DEPRECATED_ALIASES)
    config = load_config("configs/quick.yaml")
    saved = config.to_dict()
    for key in ("granularity", "channel_norm", "budget_metric", "min_channels", "measure_latency"):
        del saved["prune"][key]  # a folder written before these keys existed
    del saved["compare"]["measure_latency"]
    assert config_differences(saved, config) == []
    channel = load_config("configs/quick.yaml", ["prune.granularity=channel"])
    assert config_differences(saved, channel) == ["prune.granularity"]
    defaults = ExperimentConfig()
    assert (defaults.prune.granularity, defaults.prune.channel_norm, defaults.prune.budget_metric) == (
        "weight", "l1", "params")
    assert defaults.compare.measure_latency is False


def test_train_agent_at_channel_granularity_writes_the_slim_model_on_the_flops_budget(
        run_cli, tmp_path: Path, fast_agent_overrides: list[str], quick_task_config: ExperimentConfig):
    out = tmp_path / "train"
    result = run_cli("train", "--config", "configs/quick.yaml", "-q", "-o", str(out), *fast_agent_overrides, *CHANNEL,
                     "env.target_sparsity=0.5", "agent.rerank_candidates=2", "agent.rerank_steps=2")
    assert result.rc == 0, result.err
    results = json.loads((out / "results.json").read_text())
    assert results["granularity"] == "channel" and results["budget_metric"] == "flops"
    config = load_config("configs/quick.yaml", [*fast_agent_overrides, *CHANNEL])
    _check_budget(results, config, 0.5)
    payload = torch.load(out / "pruned.pt", weights_only=True)
    assert payload["masks"] is None and payload["meta"]["channel_keep"] == results["channel_keep"]
    task = build_task(config, torch.device("cpu"), progress=False)
    rebuilt = prune_channels(task.model, task.example_input(), payload["meta"]["channel_keep"]).eval()
    rebuilt.load_state_dict(payload["state_dict"])
    assert _test_accuracy(rebuilt, task) == pytest.approx(results["after_test_top1"], abs=1e-6)
    session = ort.InferenceSession(str(out / "pruned.onnx"), providers=["CPUExecutionProvider"])
    x, _ = next(iter(task.loader("test")))
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0],
                                   rebuilt(x).numpy(), atol=1e-4)


def test_compare_agent_next_to_channel_baselines_on_one_flops_budget(run_cli, tmp_path: Path,
                                                                     fast_agent_overrides: list[str]):
    out = tmp_path / "cmp"
    result = _compare(run_cli, tmp_path, out, "[agent,global-mp]", *fast_agent_overrides,
                      "compare.measure_latency=true")
    assert result.rc == 0, result.err
    rows = ResultsTable.read(out / "results.csv")
    agent = [r for r in rows if r["method"] == "agent"]
    assert len(agent) == 2 and all(r["granularity"] == "channel" and r["latency_ratio"] > 0 for r in agent)
    for row in rows:  # every method, the agent included, lands on the same FLOPs budget within one channel
        assert 1 - row["target_sparsity"] - 0.05 <= row["flops_ratio"] <= 1 - row["target_sparsity"] + 1e-9
    assert sorted(p.name for p in (out / "cells").glob("agent-*/pruned.onnx")) == ["pruned.onnx"] * 2
    assert "PPO agent" in (out / "summary.md").read_text()


def test_prune_with_channel_multiple_writes_round_widths(run_cli, tmp_path: Path):
    result, out = _prune(run_cli, tmp_path, *CHANNEL, "prune.channel_multiple=16", "--method", "global-mp",
                         "--sparsity", "0.6", "prune.measure_latency=false")
    assert result.rc == 0, result.err
    results = json.loads((out / "results.json").read_text())
    assert all(k % 16 == 0 for k in results["channel_keep"].values()), results["channel_keep"]
    program = torch.export.load(str(out / "pruned.pt2")).module()
    widths = [v.shape[0] for k, v in program.state_dict().items() if k.endswith("weight") and v.dim() == 2][:-1]
    assert widths and all(w % 16 == 0 for w in widths)  # the hidden layers; the classifier keeps its 10 outputs
    assert results["flops_ratio"] <= 0.4 + 1e-9


def test_random_and_layerwise_run_at_channel_granularity(run_cli, tmp_path: Path):
    """Every allocator with a channel form runs under its own name: random keeps uniform's counts (its channels
    are a seeded draw), layerwise applies its group map as given (prune.method_kwargs)."""
    config = load_config("configs/quick.yaml", ["prune.granularity=channel"])
    task = build_task(config.model_copy(update={"cache_dir": str(tmp_path.parent / "channel-cache")}),
                      torch.device("cpu"), progress=False)
    groups = channel_graph(task.model, task.example_input()).groups
    result, out = _prune(run_cli, tmp_path, "prune.granularity=channel", "--method", "random", "--sparsity", "0.5")
    assert result.rc == 0, result.err
    uniform = get_channel_allocator("uniform").keep_channels(channel_graph(task.model, task.example_input()), 0.5,
                                                              metric="params")
    assert json.loads((out / "results.json").read_text())["channel_keep"] == uniform
    fractions = {groups[0].name: 0.5}
    result, out2 = _prune(run_cli, tmp_path / "lw", "prune.granularity=channel", "--method", "layerwise",
                          "--sparsity", "0.5", f"prune.method_kwargs={json.dumps({'sparsities': fractions})}")
    assert result.rc == 0, result.err
    keep = json.loads((out2 / "results.json").read_text())["channel_keep"]
    assert keep[groups[0].name] == groups[0].size // 2 and all(keep[g.name] == g.size for g in groups[1:])
