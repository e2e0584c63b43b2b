"""summary.md's "Cell cost" table: the median cell of each method and its ratio to the grid's median baseline cell."""

from __future__ import annotations

from purl.compare.report import cost_table, summary_markdown


def _row(label: str, method: str, seconds: float, seed: int, target: float = 0.9) -> dict:
    return {"label": label, "method": method, "target_sparsity": target, "seed": seed, "status": "ok",
            "after_test_top1": 90.0, "wall_time_s": seconds}


ROWS = [_row("agent", "agent", s, i) for i, s in enumerate((30.0, 10.0, 50.0))] + \
       [_row("global-mp", "global-mp", s, i) for i, s in enumerate((2.0, 4.0, 3.0))] + \
       [_row("lamp", "lamp", s, i) for i, s in enumerate((6.0, 5.0, 7.0))]


def test_ratio_is_to_the_median_baseline_cell() -> None:
    lines = cost_table(ROWS, {"agent": "PPO agent", "global-mp": "Global MP", "lamp": "LAMP"})
    # baseline cells 2, 3, 4, 5, 6, 7: median 4.5 s; the agent's median cell 30 s -> 6.7x
    assert "| PPO agent | 3 | 30.0 | 6.7x |" in lines
    assert "| Global MP | 3 | 3.0 | 0.7x |" in lines and "| LAMP | 3 | 6.0 | 1.3x |" in lines


def test_summary_has_the_cost_section_and_no_ratio_without_baselines() -> None:
    assert "## Cell cost" in summary_markdown(ROWS)
    only_agent = cost_table(ROWS[:3], {})
    assert "| agent | 3 | 30.0 | - |" in only_agent
    assert cost_table([], {}) == []
