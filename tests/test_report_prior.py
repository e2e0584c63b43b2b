"""summary.md's "Agent vs its prior" table: what the search added over the prior, and what the prior choice cost."""

from __future__ import annotations

from purl.compare.report import prior_table, summary_markdown


def _row(label: str, method: str, top1: float, seed: int, target: float = 0.9, prior: str | None = None) -> dict:
    return {"label": label, "method": method, "target_sparsity": target, "seed": seed, "status": "ok",
            "after_test_top1": top1, "policy_source": "prior", "prior_method": prior}


def _grid() -> list[dict]:
    # seed 0 chose ERK, seeds 1-2 LAMP; LAMP is the best baseline on the mean (91.0 vs ERK 90.33)
    rows = [_row("erk", "erk", v, s) for s, v in enumerate((90.0, 91.0, 90.0))]
    rows += [_row("lamp", "lamp", v, s) for s, v in enumerate((91.0, 90.5, 91.5))]
    rows += [_row("global-mp", "global-mp", v, s) for s, v in enumerate((85.0, 85.0, 85.0))]
    rows += [_row("agent", "agent", a, s, prior=p) for s, (a, p) in
             enumerate([(90.5, "erk"), (90.5, "lamp"), (92.5, "lamp")])]
    return rows


def test_agent_is_paired_with_the_baseline_its_prior_came_from_on_each_seed() -> None:
    text = "\n".join(prior_table(_grid(), {"agent": "PPO agent", "erk": "ERK", "lamp": "LAMP"}))
    # agent - prior: +0.5 (vs ERK 90.0), 0.0 (vs LAMP 90.5), +1.0 (vs LAMP 91.5) -> +0.50, 2/1/0
    # prior - best (LAMP): 90.0-91.0, 90.5-90.5, 91.5-91.5 -> -0.33;
    # the prior is the seed's best baseline on seed 2 only (ERK is seed 1's)
    assert "| 0.9 | PPO agent | LAMP 2, ERK 1 | 3 | +0.50 |" in text
    assert "| 2/1/0 | tie | -0.33 |" in text and "| 1 of 3 |" in text


def test_cells_whose_prior_is_not_in_the_grid_are_left_out() -> None:
    rows = [_row("lamp", "lamp", 91.0, 0), _row("agent", "agent", 91.0, 0, prior="erk")]
    assert prior_table(rows, {}) == []
    rows.append(_row("agent", "agent", 92.0, 1, prior="lamp"))  # seed 1's prior has no LAMP cell on seed 1
    assert prior_table(rows, {}) == []


def test_summary_carries_the_table_only_when_an_agent_recorded_a_prior() -> None:
    assert "## Agent vs its prior" in summary_markdown(_grid())
    plain = [r | {"prior_method": None} for r in _grid()]
    assert "## Agent vs its prior" not in summary_markdown(plain)
