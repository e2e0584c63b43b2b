"""benchmarks/bench_warm_start.py's per-target comparison of a cold and a warm-started grid, and its cost ratio."""

from __future__ import annotations

from bench_loader import load_benchmark


def _rows(label: str, method: str, values: list[float], *, source: str = "prior", seconds: float = 1.0,
          layers: dict | None = None) -> list[dict]:
    return [{"label": label, "method": method, "target_sparsity": 0.9, "seed": s, "status": "ok",
             "after_test_top1": v, "policy_source": source, "wall_time_s": seconds, "search_wall_time_s": seconds,
             "layer_sparsity": layers or {"fc": 0.9}} for s, v in enumerate(values)]


def test_best_baseline_pairing_and_identical_allocations() -> None:
    bench = load_benchmark("bench_warm_start")
    base = _rows("global-mp", "global-mp", [90.0, 91.0, 92.0]) + _rows("lamp", "lamp", [93.0, 94.0, 95.0])
    cold = _rows("agent", "agent", [93.0, 94.0, 95.0]) + base
    warm = _rows("agent", "agent", [93.0, 94.0, 95.5], layers={"fc": 0.9}) + base
    warm[2]["layer_sparsity"] = {"fc": 0.8}  # seed 2's warm search reported another allocation
    row = bench.target_row(cold, warm, 0.9, ["global-mp", "lamp"])
    assert row["best_baseline"] == "lamp"  # the strongest baseline, not Global MP
    assert row["warm_minus_best"].wtl == "1/2/0" and abs(row["warm_minus_cold"].mean - 0.5 / 3) < 1e-9
    assert row["same_allocation"] == 2 and row["searched_warm"] == 0


def test_cost_is_the_ratio_of_medians_within_a_grid() -> None:
    bench = load_benchmark("bench_warm_start")
    rows = _rows("agent", "agent", [1, 2, 3], seconds=9.0) + _rows("lamp", "lamp", [1, 2, 3], seconds=3.0)
    cost = bench.cost(rows)
    assert cost["ratio"] == 3.0 and cost["search_total_s"] == 27.0
