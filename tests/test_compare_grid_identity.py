"""A compare folder's rows all come from one config: a re-run with another one is refused, not mixed in."""

from __future__ import annotations

import json
from pathlib import Path

from purl.compare import ResultsTable

TINY = ["pretrain.epochs=3", "finetune.epochs=1", "finetune.max_steps=5", "compare.seeds=[0]",
        "compare.methods=[global-mp]"]


def _compare(run_cli, tmp_path: Path, out: Path, *extra: str):
    return run_cli("compare", "--config", "configs/quick.yaml", "-q", "--device", "cpu", "-o", str(out),
                   f"cache_dir={tmp_path / 'cache'}", *TINY, *extra)


def test_rerun_with_another_finetune_is_refused_and_changes_nothing(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    assert _compare(run_cli, tmp_path, out, "compare.sparsities=[0.5]").rc == 0
    assert json.loads((out / "grid.json").read_text())["finetune"]["max_steps"] == 5
    before = (out / "results.csv").read_bytes()
    result = _compare(run_cli, tmp_path, out, "compare.sparsities=[0.5,0.9]", "finetune.lr=0.5")
    assert result.rc == 2 and "another config" in result.err and "finetune.lr" in result.err
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1
    assert (out / "results.csv").read_bytes() == before


def test_extending_the_grid_with_the_same_config_resumes(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    assert _compare(run_cli, tmp_path, out, "compare.sparsities=[0.5]").rc == 0
    result = _compare(run_cli, tmp_path, out, "compare.sparsities=[0.5,0.9]")
    assert result.rc == 0, result.err
    assert sorted(r["target_sparsity"] for r in ResultsTable.read(out / "results.csv")) == [0.5, 0.9]


def test_interrupted_first_run_is_checked_too(run_cli, tmp_path: Path) -> None:
    """grid.json is written before the first cell, so a folder without config.yaml is still checked."""
    out = tmp_path / "cmp"
    assert _compare(run_cli, tmp_path, out, "compare.sparsities=[0.5]").rc == 0
    (out / "config.yaml").unlink()  # as if the run had stopped before its end
    result = _compare(run_cli, tmp_path, out, "compare.sparsities=[0.5]", "finetune.max_steps=6")
    assert result.rc == 2 and "finetune.max_steps" in result.err


def test_a_library_caller_of_run_comparison_gets_the_same_guard(run_cli, quick_task, tmp_path: Path) -> None:
    import pytest

    from purl.compare import run_comparison
    from purl.compare.runner import LocalExecutor
    from purl.config import load_config
    from purl.errors import ConfigError

    out = tmp_path / "cmp"
    assert _compare(run_cli, tmp_path, out, "compare.sparsities=[0.5]").rc == 0
    before = (out / "results.csv").read_bytes()
    other = load_config("configs/quick.yaml", [f"cache_dir={tmp_path / 'cache'}", "device=cpu", *TINY,
                                               "compare.sparsities=[0.5, 0.9]", "finetune.lr=0.5"])
    with pytest.raises(ConfigError, match="another config.*finetune.lr"):
        run_comparison(other, out, executor=LocalExecutor(quick_task), device="cpu", progress=False)
    assert (out / "results.csv").read_bytes() == before
