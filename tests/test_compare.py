"""`purl compare` and `purl report`: tidy results, resume, regenerated summary, failures recorded."""

from __future__ import annotations

import csv
import textwrap
from pathlib import Path

import pytest

from purl.compare import CSV_COLUMNS, ResultsTable
from purl.compare.report import summary_markdown

TINY = [
    "pretrain.epochs=3", "finetune.epochs=1", "finetune.max_steps=5", "compare.sparsities=[0.5,0.9]",
    "compare.seeds=[0]", "compare.profile_sparsity=0.9",
]


def _compare(run_cli, tmp_path: Path, out: Path, methods: str, *extra: str):
    return run_cli("compare", "--config", "configs/quick.yaml", "-q", "--device", "cpu", "-o", str(out),
                   f"cache_dir={tmp_path / 'cache'}", *TINY, f"compare.methods={methods}", *extra)


def test_tiny_compare_writes_every_file_with_the_right_rows(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    result = _compare(run_cli, tmp_path, out, "[global-mp,uniform]")
    assert result.rc == 0, result.err
    rows = ResultsTable.read(out / "results.csv")
    with open(out / "results.csv", newline="") as handle:
        assert next(csv.reader(handle)) == CSV_COLUMNS
    assert sorted((r["label"], r["target_sparsity"], r["seed"]) for r in rows) == [
        ("global-mp", 0.5, 0), ("global-mp", 0.9, 0), ("uniform", 0.5, 0), ("uniform", 0.9, 0)]
    for row in rows:
        assert row["status"] == "ok"
        assert row["achieved_sparsity"] == pytest.approx(row["target_sparsity"], abs=1e-4)
        assert 0 <= row["after_test_top1"] <= 100 and row["after_test_top5"] >= row["after_test_top1"]
        assert row["sparse_flops"] < row["dense_flops"]
        assert row["compression_ratio"] == pytest.approx(1 / (1 - row["achieved_sparsity"]), rel=1e-6)
        assert set(row["layer_sparsity"]) == {"fc1", "fc2", "fc3"}
    for name in ("summary.md", "accuracy_vs_compression.png", "accuracy_vs_flops.png", "layer_profile.png",
                 "results.json", "config.yaml"):
        assert (out / name).is_file(), name
    summary = (out / "summary.md").read_text()
    assert "| 0.9 | Global MP | 1 |" in summary and "| 0.5 | Uniform | 1 |" in summary
    assert "**" in summary  # a best value is marked
    assert "global-mp" in result.out and "summary" in result.out


def test_rerun_skips_finished_cells_and_report_regenerates_identical_summary(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    assert _compare(run_cli, tmp_path, out, "[global-mp]").rc == 0
    first = ResultsTable.read(out / "results.csv")
    # Grow the grid: the finished global-mp cells must be kept as they are, only lamp cells run.
    assert _compare(run_cli, tmp_path, out, "[global-mp,lamp]").rc == 0
    second = ResultsTable.read(out / "results.csv")
    assert second[:2] == first
    assert [r["label"] for r in second[2:]] == ["lamp", "lamp"]
    summary = (out / "summary.md").read_text()
    (out / "summary.md").unlink()
    result = run_cli("report", str(out))
    assert result.rc == 0, result.err
    assert (out / "summary.md").read_text() == summary


def test_a_failing_method_is_recorded_without_losing_the_others(run_cli, tmp_path: Path, monkeypatch) -> None:
    plugin = tmp_path / "plugins"
    plugin.mkdir()
    (plugin / "broken_alloc.py").write_text(textwrap.dedent("""
        from purl.baselines import Allocator

        class Broken(Allocator):
            name = "broken"

            def allocate(self, layers, sparsity, constraints=None, *, generator=None):
                raise RuntimeError("this allocator always fails")
    """))
    monkeypatch.syspath_prepend(str(plugin))
    out = tmp_path / "cmp"
    result = _compare(run_cli, tmp_path, out, "[global-mp,'broken_alloc:Broken']", "compare.max_retries=1")
    assert result.rc == 1
    rows = ResultsTable.read(out / "results.csv")
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(ok) == 2 and len(failed) == 2
    assert all(r["attempts"] == 2 and "always fails" in r["error"] for r in failed)
    assert "## Failed cells" in (out / "summary.md").read_text()


def test_unknown_method_fails_before_any_work(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    result = _compare(run_cli, tmp_path, out, "[global-mp,globl-mp]")
    assert result.rc == 2
    assert "globl-mp" in result.err and "allowed" in result.err and "Traceback" not in result.err
    assert not (out / "results.csv").exists()


def test_summary_marks_the_best_only_outside_the_paired_interval_and_reports_mean_and_std() -> None:
    base = {c: None for c in CSV_COLUMNS} | {"status": "ok", "target_sparsity": 0.9, "achieved_sparsity": 0.9,
                                            "compression_ratio": 10.0, "theoretical_speedup": 9.0, "n_collapsed": 0}
    # after FT: b leads a by 3, 3.5, 2.5 points on the same seeds (outside the 95% interval) -> bold;
    # before FT: a leads b by +10, -1, +1 (the interval holds zero) -> the best mean is marked (tie)
    after = {"a": [90.0, 92.0, 91.0], "b": [93.0, 95.5, 93.5]}
    before = {"a": [80.0, 82.0, 81.0], "b": [70.0, 83.0, 80.0]}
    rows = [base | {"label": label, "seed": seed, "after_test_top1": after[label][seed],
                    "before_test_top1": before[label][seed]} for label in ("a", "b") for seed in range(3)]
    text = summary_markdown(rows)
    assert "| 0.9 | a | 3 | 91.00 ± 1.00 | 81.00 ± 1.00 (tie) |" in text
    assert "| 0.9 | b | 3 | **94.00 ± 1.32** | 77.67 ± 6.81 |" in text


def test_one_seed_never_makes_a_bold_winner() -> None:
    base = {c: None for c in CSV_COLUMNS} | {"status": "ok", "target_sparsity": 0.9, "seed": 0}
    rows = [base | {"label": "a", "after_test_top1": 90.0}, base | {"label": "b", "after_test_top1": 95.0}]
    text = summary_markdown(rows)
    assert "| 0.9 | b | 1 | 95.00 (tie) |" in text and "**95.00**" not in text
