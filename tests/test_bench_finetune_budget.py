"""benchmarks/bench_finetune_budget.py's verdict: where the ranking of methods stops changing as the budget grows."""

from __future__ import annotations

from bench_loader import load_benchmark


def _bench():
    return load_benchmark("bench_finetune_budget")


def _seeds(base: float, jitter: float = 0.1) -> dict[int, float]:
    return {s: base + s + (jitter if s % 2 else -jitter) for s in range(4)}


def test_a_reversal_at_a_larger_budget_moves_the_verdict_up() -> None:
    bench = _bench()
    # a leads b at 1 epoch; from 2 epochs on b leads, outside the noise: the ranking holds from 2
    table = {0.9: {"a": {1: _seeds(92.0), 2: _seeds(93.0), 4: _seeds(93.5)},
                   "b": {1: _seeds(90.0), 2: _seeds(94.0), 4: _seeds(94.6)}}}
    result = bench.verdict(table, [1, 2, 4])
    info = result["targets"]["0.9"]
    assert info["holds_from"] == 2 and result["holds_from_every_target"] == 2
    assert set(info["reversals"]) == {"1->2", "1->4"}


def test_noise_and_ties_are_not_reversals() -> None:
    bench = _bench()
    # the order flips between budgets but never outside the paired interval; c ties a at 1 then separates
    table = {0.5: {"a": {1: _seeds(90.0, 1.0), 2: _seeds(90.2, 1.0)},
                   "b": {1: _seeds(90.1, -1.0), 2: _seeds(90.0, -1.0)},
                   "c": {1: _seeds(90.0, 1.0), 2: _seeds(91.0, 1.0)}}}
    result = bench.verdict(table, [1, 2])
    assert result["targets"]["0.5"] == {"holds_from": 1, "reversals": {}}


def test_a_ranking_still_moving_at_the_largest_budget_does_not_settle() -> None:
    bench = _bench()
    table = {0.98: {"a": {1: _seeds(50.0), 2: _seeds(70.0), 4: _seeds(80.0)},
                    "b": {1: _seeds(60.0), 2: _seeds(65.0), 4: _seeds(85.0)}}}
    result = bench.verdict(table, [1, 2, 4])
    assert result["targets"]["0.98"]["holds_from"] is None  # the largest budget alone confirms nothing
    assert result["holds_from_every_target"] is None


def test_a_reversal_inside_the_margin_does_not_count() -> None:
    bench = _bench()
    # b overtakes a by 0.3 points on every seed at 2 epochs: a real order, but inside a 0.5-point margin
    table = {0.9: {"a": {1: _seeds(91.0), 2: _seeds(92.0)}, "b": {1: _seeds(90.0), 2: _seeds(92.3)}}}
    assert bench.verdict(table, [1, 2], margin=0.0)["targets"]["0.9"]["holds_from"] is None
    assert bench.verdict(table, [1, 2], margin=0.5)["targets"]["0.9"] == {"holds_from": 1, "reversals": {}}


def test_a_budget_that_agrees_with_the_largest_but_is_followed_by_a_reversal_is_not_the_verdict() -> None:
    bench = _bench()
    # b > a at 1, 2 and 8 epochs, but a > b at 4 (outside the noise): from 2 on the ranking is not stable
    table = {0.9: {"a": {1: _seeds(90.0), 2: _seeds(90.0), 4: _seeds(93.0), 8: _seeds(93.0)},
                   "b": {1: _seeds(91.0), 2: _seeds(91.0), 4: _seeds(92.0), 8: _seeds(94.0)}}}
    assert bench.verdict(table, [1, 2, 4, 8])["targets"]["0.9"]["holds_from"] is None


def test_the_mt_shorthand_carries_the_requested_minimum_threshold_into_the_config() -> None:
    from purl.config import load_config

    entries = _bench().method_entries(["global-mp", "global-mp+mt"], mt_percent=0.005)
    config = load_config("configs/mnist5k-lenet5.yaml", [f"compare.methods={entries}"])
    mt = [m for m in config.compare.methods if getattr(m, "label", m) == "global-mp+mt"]
    assert len(mt) == 1 and mt[0].method == "global-mp" and mt[0].min_threshold == 0.005
