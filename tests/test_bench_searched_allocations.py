"""benchmarks/bench_searched_allocations.py: the search's kept candidates, read from a cell's checkpoint state,
and their paired comparison with the reported allocation."""

from __future__ import annotations

import json
from pathlib import Path

from bench_loader import load_benchmark


def test_candidates_come_from_the_checkpoint_state(tmp_path: Path) -> None:
    bench = load_benchmark("bench_searched_allocations")
    (tmp_path / "checkpoints").mkdir()
    best = {"accuracy": 0.9, "layer_sparsities": {"fc1": 0.9, "fc2": 0.5}}
    (tmp_path / "checkpoints" / "last.json").write_text(json.dumps({"best_accuracy": best, "best_return": None}))
    assert bench.candidates(tmp_path) == {"most-accurate": best}  # no best-return episode met the target


def test_markdown_pairs_candidates_with_the_reported_allocation() -> None:
    bench = load_benchmark("bench_searched_allocations")
    rows = [{"label": "agent", "target_sparsity": 0.98, "seed": s, "candidate": "most-accurate",
             "reported_top1": rep, "candidate_top1": cand, "same_as_reported": same}
            for s, (rep, cand, same) in enumerate([(96.0, 95.0, False), (97.0, 97.0, True), (95.0, 94.0, False)])]
    text = bench.markdown(rows, {"agent": "PPO agent"}, "cmd")
    assert "| PPO agent | 0.98 | most-accurate | 96.00 | 95.33 | -0.67 [" in text and "0/1/2 | 1 of 3 |" in text
    assert bench._same({"a": 0.5}, {"a": 0.5 + 1e-12}) and not bench._same({"a": 0.5}, {"a": 0.6})


def test_the_prior_is_rebuilt_from_the_recorded_prior_method(quick_task, quick_task_config) -> None:
    from purl.baselines import get_allocator
    from purl.config import load_config
    from purl.pruning import find_prunable_layers
    from purl.pruning.constraints import Constraints
    from tests.conftest import QUICK_CONFIG

    bench = load_benchmark("bench_searched_allocations")
    config = load_config(QUICK_CONFIG, [f"cache_dir={quick_task_config.cache_dir}", "pretrain.epochs=3", "device=cpu",
                                        "env.prior=auto", "env.action=prior-relative"])
    layers = find_prunable_layers(quick_task.model)
    row = {"label": "agent", "target_sparsity": 0.9, "seed": 0}
    for label, method, min_threshold in (("lamp", "lamp", None), ("global-mp+mt", "global-mp", 0.05)):
        prior = bench.prior_allocation(config, {**row, "prior_method": label}, quick_task)
        counts = get_allocator(method).allocate(
            layers, 0.9, Constraints.from_config(config.constraints, min_threshold=min_threshold))
        assert prior == {layer.name: counts[layer.name] / layer.numel for layer in layers}
    assert bench.prior_allocation(config, {**row, "prior_method": None}, quick_task) is None
