"""Paired statistics of a comparison (purl/compare/stats.py) and where they show: summary.md's paired-difference
table, wins/ties/losses, the reference method (compare.reference), and the plots' intervals."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from scipy import stats as scipy_stats

from purl.compare import CSV_COLUMNS, ResultsTable
from purl.compare.report import summary_markdown, write_report
from purl.compare.stats import paired_difference, t_interval
from purl.config import load_config
from purl.errors import ConfigError


def test_t_interval_matches_scipy() -> None:
    values = [1.0, 2.5, 0.5, 3.0, 2.0]
    mean, low, high = t_interval(values)
    want = scipy_stats.t.interval(0.95, len(values) - 1, loc=mean, scale=scipy_stats.sem(values))
    assert mean == pytest.approx(1.8) and (low, high) == pytest.approx(want)


def test_one_value_has_no_interval_and_is_never_separated() -> None:
    mean, low, high = t_interval([2.0])
    assert mean == 2.0 and math.isnan(low) and math.isnan(high)
    diff = paired_difference({0: 95.0}, {0: 90.0})
    assert diff.n == 1 and diff.mean == 5.0 and not diff.separated


def test_paired_difference_pairs_by_seed_and_counts_wins_ties_losses() -> None:
    a = {0: 91.0, 1: 92.0, 2: 90.0, 3: 93.0, 7: 50.0}  # seed 7 has no partner: left out
    b = {0: 90.0, 1: 92.0, 2: 91.0, 3: 90.0, 9: 10.0}
    diff = paired_difference(a, b)
    assert diff.n == 4 and diff.mean == pytest.approx(0.75)
    assert (diff.wins, diff.ties, diff.losses) == (2, 1, 1) and diff.wtl == "2/1/1"
    assert diff.low < 0 < diff.high and not diff.separated


def test_a_consistent_lead_is_separated_even_when_unpaired_stds_overlap() -> None:
    # the seeds move both methods together: unpaired means +- std overlap, the paired lead is clear
    a = {s: 80.0 + 5 * s + 0.5 for s in range(5)}
    b = {s: 80.0 + 5 * s for s in range(5)}
    diff = paired_difference(a, b)
    assert diff.separated and diff.low > 0 and diff.mean == pytest.approx(0.5)


def _row(label: str, target: float, seed: int, top1: float) -> dict[str, Any]:
    row: dict[str, Any] = {c: None for c in CSV_COLUMNS}
    row.update({"label": label, "method": label.split("+")[0], "target_sparsity": target, "seed": seed,
                "status": "ok", "after_test_top1": top1, "before_test_top1": top1 - 5, "achieved_sparsity": target,
                "compression_ratio": 1 / (1 - target), "dense_flops": 1000, "sparse_flops": int(1000 * (1 - target)),
                "theoretical_speedup": 1 / (1 - target), "n_collapsed": 0, "layer_sparsity": {"fc1": target}})
    return row


def _grid_rows() -> list[dict[str, Any]]:
    rows = []
    for seed in range(4):
        rows.append(_row("global-mp", 0.9, seed, 90.0 + seed))
        rows.append(_row("lamp", 0.9, seed, 92.0 + seed + (0.2 if seed % 2 else -0.2)))  # +2 +- 0.2: a lead
        rows.append(_row("erk", 0.9, seed, 90.0 + seed + (1.0 if seed % 2 else -1.0)))  # 0 +- 1: noise
    return rows


def _paired_section(text: str) -> str:
    return text[text.index("## Paired differences"):]


def test_summary_has_the_paired_table_against_global_mp_by_default() -> None:
    text = summary_markdown(_grid_rows())
    assert "## Paired differences vs Global MP" in text and "Student-t" in text
    lamp = next(line for line in _paired_section(text).splitlines() if line.startswith("| 0.9 | LAMP | 4 |"))
    erk = next(line for line in _paired_section(text).splitlines() if line.startswith("| 0.9 | ERK | 4 |"))
    assert "**+2.00**" in lamp and lamp.endswith("| 4/0/0 |")
    assert "+0.00" in erk and "**" not in erk and erk.endswith("| 2/0/2 |")
    low, high = (float(x) for x in erk.split("[")[1].split("]")[0].split(","))
    assert low < 0 < high


def test_summary_against_another_reference() -> None:
    text = summary_markdown(_grid_rows(), reference="lamp")
    assert "## Paired differences vs LAMP" in text
    gmp = next(line for line in _paired_section(text).splitlines() if line.startswith("| 0.9 | Global MP | 4 |"))
    assert "**-2.00**" in gmp and gmp.endswith("| 0/0/4 |")


def test_compare_reference_must_name_a_method_of_the_grid() -> None:
    config = load_config("configs/quick.yaml", ["compare.reference=lamp"])
    assert config.compare.reference_label() == "lamp"
    assert load_config("configs/quick.yaml").compare.reference_label() == "global-mp"
    assert load_config("configs/quick.yaml", ["compare.methods=[erk, lamp]"]).compare.reference_label() == "erk"
    with pytest.raises(ConfigError, match="compare.reference 'lmap' is not a method label.*allowed: agent"):
        load_config("configs/quick.yaml", ["compare.reference=lmap"])


def test_report_uses_the_saved_reference_and_draws_paired_differences(tmp_path: Path) -> None:
    table = ResultsTable(tmp_path / "results.csv")
    for row in _grid_rows():
        table.add(row)
    raw = load_config("configs/quick.yaml", ["compare.methods=[global-mp, lamp, erk]",
                                              "compare.reference=erk"]).to_dict()
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    written = write_report(tmp_path)
    assert "## Paired differences vs ERK" in (tmp_path / "summary.md").read_text()
    assert written["paired_differences"].is_file() and written["paired_differences_svg"].is_file()


def test_plots_draw_the_95_percent_interval_not_the_std(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import purl.compare.report as report

    drawn: dict[str, list] = {}
    real = report._accuracy_plot

    def spy(rows, x_key, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        drawn[x_key] = report._method_series(rows, x_key)["lamp"]
        return real(rows, x_key, *args, **kwargs)

    monkeypatch.setattr(report, "_accuracy_plot", spy)
    table = ResultsTable(tmp_path / "results.csv")
    for row in _grid_rows():
        table.add(row)
    write_report(tmp_path)
    (_, mean, half), = drawn["compression_ratio"]
    values = [92.0 + s + (0.2 if s % 2 else -0.2) for s in range(4)]
    assert mean == pytest.approx(sum(values) / 4)
    assert half == pytest.approx(scipy_stats.t.ppf(0.975, 3) * scipy_stats.sem(values))


def test_report_names_missing_columns(run_cli, tmp_path: Path) -> None:
    (tmp_path / "results.csv").write_text("label,method,target_sparsity,seed,status\nlamp,lamp,0.9,0,ok\n")
    result = run_cli("report", str(tmp_path))
    assert result.rc == 2 and "Traceback" not in result.err
    assert "after_test_top1" in result.err and "compression_ratio" in result.err


def test_a_grid_whose_cells_all_failed_still_gets_its_failed_cells_summary(tmp_path: Path) -> None:
    table = ResultsTable(tmp_path / "results.csv")
    row = {c: None for c in CSV_COLUMNS} | {"label": "lamp", "method": "lamp", "target_sparsity": 0.9, "seed": 0,
                                            "status": "failed", "error": "PruningError: no"}
    table.add(row)
    write_report(tmp_path)
    assert "## Failed cells" in (tmp_path / "summary.md").read_text()
