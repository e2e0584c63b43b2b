"""compare.seed_scope: a seed resamples the fine-tuning order only (default), or also the data split and dense
model (task); methods of one seed always share one task, so differences stay paired."""

from __future__ import annotations

from pathlib import Path

import pytest

from purl.compare import ResultsTable
from purl.config import load_config

GRID = ["compare.methods=[global-mp, lamp]", "compare.sparsities=[0.9]", "compare.seeds=[0, 1]",
        "finetune.epochs=1", "pretrain.epochs=3"]


def _compare(run_cli, out: Path, cache: Path, *extra: str):
    return run_cli("compare", "--config", "configs/quick.yaml", "-o", out, "--quiet", f"cache_dir={cache}",
                   *GRID, *extra)


def _dense_by_seed(out: Path) -> dict[int, set[float]]:
    dense: dict[int, set[float]] = {}
    for row in ResultsTable.read(out / "results.csv"):
        dense.setdefault(int(row["seed"]), set()).add(row["dense_test_top1"])
    return dense


def test_task_scope_gives_each_seed_its_own_dense_model_shared_by_its_methods(run_cli, tmp_path: Path) -> None:
    result = _compare(run_cli, tmp_path / "task", tmp_path / "cache", "compare.seed_scope=task")
    assert result.rc == 0, result.err
    assert "one data split and dense model per seed" in result.out
    dense = _dense_by_seed(tmp_path / "task")
    assert all(len(values) == 1 for values in dense.values())  # the methods of a seed: one dense model
    assert dense[0] != dense[1]  # another split and dense model per seed
    cached = sorted(p.name for p in (tmp_path / "cache" / "dense").glob("*.pt"))
    assert len(cached) == 2 and any("seed0" in n for n in cached) and any("seed1" in n for n in cached)


def test_the_finetune_scope_keeps_one_dense_model_for_the_grid(run_cli, tmp_path: Path) -> None:
    assert _compare(run_cli, tmp_path / "ft", tmp_path / "cache", "compare.seed_scope=finetune").rc == 0
    dense = _dense_by_seed(tmp_path / "ft")
    assert dense[0] == dense[1] and len(dense[0]) == 1


def test_switching_the_scope_in_a_finished_folder_is_refused(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    assert _compare(run_cli, out, tmp_path / "cache", "compare.seed_scope=finetune").rc == 0
    result = _compare(run_cli, out, tmp_path / "cache", "compare.seed_scope=task")
    assert result.rc == 2 and "compare.seed_scope" in result.err and "Traceback" not in result.err


def test_cell_task_config_sets_the_seed_only_under_task_scope() -> None:
    config = load_config("configs/quick.yaml", ["compare.seed_scope=finetune"])
    assert config.compare.cell_task_config(config, 3) is config
    assert load_config(None).compare.seed_scope == "finetune"  # the library default
    scoped = load_config("configs/quick.yaml", ["compare.seed_scope=task"])
    assert scoped.compare.cell_task_config(scoped, 3).seed == 3
    with pytest.raises(Exception, match="seed_scope"):
        load_config("configs/quick.yaml", ["compare.seed_scope=dense"])
