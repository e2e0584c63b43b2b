"""benchmarks/bench_prior_choice.py: re-making env.prior: auto's choice with other proxies, and scoring it by the
test accuracy the chosen baseline's own cell reached."""

from __future__ import annotations

from pathlib import Path

from bench_loader import load_benchmark


def test_the_choice_is_scored_by_the_seed_best_candidate_of_each_folder() -> None:
    bench = load_benchmark("bench_prior_choice")
    a, b = Path("grid/ft8"), Path("grid/ft16")
    truths = {str(a): {(0.9, 0): {"erk": 95.0, "lamp": 96.0}}, str(b): {(0.9, 0): {"erk": 97.0, "lamp": 96.5}}}
    # uniform scores best but has no cell in the grid: the choice is among the candidates that do (ERK)
    row = bench.score_choice({"erk": 0.8, "lamp": 0.7, "uniform": 0.9}, truths, a, [a, b], 0.9, 0)
    assert row["chosen"] == "erk" and row["all_chosen"] == "uniform"
    assert row["regret:ft8"] == 1.0 and row["regret:ft16"] == 0.0
    rows = [row | {"steps": 40, "proxy_seeds": 1, "recorded": "uniform", "seconds": 2.0}]
    text = bench.markdown(rows, [a, b], [40], [1], a, "cmd")
    assert "re-made the agent cells' recorded choice in 1 of 1" in text
    assert "| 40 | 1 | 2.0 | 0 of 1 | 1.00 [" in text and "| 1 of 1 | 0.00 [" in text


def test_one_proxy_seed_at_the_configs_steps_is_the_agent_cells_own_choice(quick_task, quick_task_config) -> None:
    from purl.envs.prior import choose_prior

    bench = load_benchmark("bench_prior_choice")
    config = quick_task.config.model_copy(deep=True)
    config.env.prior, config.env.action = "auto", "prior-relative"
    scores, seconds = bench.candidate_scores(quick_task, config, 0.9, 3, config.agent.rerank_steps, 1)
    cfg = config.model_copy(update={"env": config.env.model_copy(update={"target_sparsity": 0.9})})
    assert scores == {k: v for k, v in choose_prior(quick_task, cfg, 3).scores.items() if v is not None}
    averaged, more = bench.candidate_scores(quick_task, config, 0.9, 3, config.agent.rerank_steps, 2)
    assert more > seconds > 0 and averaged.keys() == scores.keys() and averaged != scores
