"""``purl prune`` and ``purl train`` are one-cell grids: the same config and seed give the row the compare cell gives,
and their folder holds that row in the grid's ``results.csv`` (``purl report`` reads it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from purl.compare import ResultsTable

QUICK = Path(__file__).resolve().parents[1] / "configs" / "quick.yaml"
#: the measured columns a one-cell run and its compare cell must agree on exactly (wall times differ)
SAME = ("achieved_sparsity", "before_test_top1", "after_test_top1", "after_test_top5", "nonzero_params",
        "sparse_flops", "layer_sparsity", "finetune_steps", "status", "label", "method", "seed", "target_sparsity")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny networks: one intra-op thread."""


def _compare_row(run_cli, out: Path, method: str, sparsity: float, overrides: list[str]) -> dict:
    result = run_cli("compare", "--config", QUICK, "-q", "-o", out, *overrides, f"compare.methods=[{method}]",
                     f"compare.sparsities=[{sparsity}]", "compare.seeds=[0]")
    assert result.rc == 0, result.err
    (row,) = ResultsTable.read(out / "results.csv")
    return row


@pytest.mark.parametrize("granularity", ["weight", "channel"])
def test_prune_gives_the_compare_cells_row(run_cli, fast_agent_overrides: list[str], tmp_path: Path,
                                           granularity: str) -> None:
    overrides = [*fast_agent_overrides, f"prune.granularity={granularity}", "prune.measure_latency=false"]
    result = run_cli("prune", "--config", QUICK, "-q", "-o", tmp_path / "prune", *overrides, "--method", "lamp",
                     "--sparsity", "0.75", "--seed", "0")
    assert result.rc == 0, result.err
    (one,) = ResultsTable.read(tmp_path / "prune" / "results.csv")
    cell = _compare_row(run_cli, tmp_path / "compare", "lamp", 0.75, overrides)
    assert {k: one[k] for k in SAME} == {k: cell[k] for k in SAME}
    assert json.loads((tmp_path / "prune" / "results.json").read_text())["after_test_top1"] == one["after_test_top1"]
    report = run_cli("report", tmp_path / "prune")
    assert report.rc == 0, report.err
    assert "LAMP" in (tmp_path / "prune" / "summary.md").read_text()


def test_train_gives_the_compare_cells_row(run_cli, fast_agent_overrides: list[str], tmp_path: Path) -> None:
    result = run_cli("train", "--config", QUICK, "-q", "-o", tmp_path / "train", *fast_agent_overrides,
                     "env.target_sparsity=0.75", "--seed", "0")
    assert result.rc == 0, result.err
    (one,) = ResultsTable.read(tmp_path / "train" / "results.csv")
    cell = _compare_row(run_cli, tmp_path / "compare", "agent", 0.75, fast_agent_overrides)
    assert {k: one[k] for k in SAME} == {k: cell[k] for k in SAME}
    assert one["search_env_steps"] == cell["search_env_steps"] and one["policy_source"] == cell["policy_source"]
    # the prior's per-layer map and the re-ranking score reach results.csv, so a deviation can be read off the table
    assert set(cell["prior_layer_sparsity"]) == set(cell["layer_sparsity"])
    assert one["prior_layer_sparsity"] == cell["prior_layer_sparsity"]
    assert one["policy_proxy"] == cell["policy_proxy"]
