"""summary.md's "Agent vs the best baseline" table: the agent against the strongest baseline of each target."""

from __future__ import annotations

from purl.compare.report import best_baseline_table


def _row(label: str, method: str, top1: float, seed: int, target: float = 0.9, source: str | None = None) -> dict:
    return {"label": label, "method": method, "target_sparsity": target, "seed": seed, "status": "ok",
            "after_test_top1": top1, "policy_source": source}


def test_reference_is_the_best_baseline_and_verdicts_follow_the_interval() -> None:
    rows = [_row("agent", "agent", a, s, source=src) for s, (a, src) in enumerate(
        [(91.0, "prior"), (92.1, "best-episode"), (93.0, "prior")])]
    rows += [_row("global-mp", "global-mp", v, s) for s, v in enumerate((80.0, 81.0, 82.0))]
    rows += [_row("lamp", "lamp", v, s) for s, v in enumerate((90.0, 91.0, 92.0))]  # the best baseline
    rows += [_row("agent", "agent", v, s, target=0.5, source="prior") for s, v in enumerate((95.0, 96.0, 97.0))]
    rows += [_row("lamp", "lamp", v, s, target=0.5) for s, v in enumerate((95.0, 96.5, 96.0))]
    lines = best_baseline_table(rows, {"agent": "PPO agent", "lamp": "LAMP"})
    text = "\n".join(lines)
    # at 0.9: +1.0, +1.1, +1.0 against LAMP (not against the weaker Global MP): ahead, 3/0/0
    assert "| 0.9 | PPO agent | LAMP | 3 | +1.03 |" in text and "| 3/0/0 | ahead | 2 of 3 |" in text
    assert "| 0.5 | PPO agent | LAMP | 3 | +0.17 |" in text and "| 1/1/1 | tie | 3 of 3 |" in text


def test_no_table_without_an_agent_or_a_baseline() -> None:
    assert best_baseline_table([_row("lamp", "lamp", 90.0, 0)], {}) == []
    assert best_baseline_table([_row("agent", "agent", 90.0, 0)], {}) == []
