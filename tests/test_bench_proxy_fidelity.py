"""benchmarks/bench_proxy_fidelity.py: its allocations land on the target, and its rank statistics are right."""

from __future__ import annotations

import pytest
from bench_loader import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_proxy_fidelity")


def test_rank_correlations_and_their_intervals(bench) -> None:
    truth = [90.0, 91.0, 93.0, 95.0, 96.0, 97.5]
    same = bench.rank_correlations([1, 2, 3, 4, 5, 6], truth, resamples=200, seed=0)
    assert same["spearman"] == pytest.approx(1.0) and same["kendall"] == pytest.approx(1.0)
    assert same["spearman_lo"] == pytest.approx(1.0)
    reverse = bench.rank_correlations([6, 5, 4, 3, 2, 1], truth, resamples=200, seed=0)
    assert reverse["kendall"] == pytest.approx(-1.0) and reverse["kendall_hi"] == pytest.approx(-1.0)
    mixed = bench.rank_correlations([1, 3, 2, 6, 4, 5], truth, resamples=500, seed=0)
    assert -1 < mixed["kendall_lo"] < mixed["kendall"] < mixed["kendall_hi"] <= 1


def test_every_allocation_is_at_the_exact_target_and_perturbations_differ(bench, quick_task) -> None:
    from purl.pruning.masks import pruned_count

    target = 0.9
    found = bench.baseline_allocations(quick_task, target)
    assert set(found) == set(bench.BASELINES)
    found.update(bench.perturbed_allocations(quick_task, found["global-mp"], target, 4, [0.5, 1.0], seed=0))
    assert len(found) == len(bench.BASELINES) + 4
    _, masks = quick_task.fresh_copy()
    numels = masks.numels()
    want = pruned_count(target, sum(numels.values()))
    for label, sparsities in found.items():
        assert sum(round(s * numels[n]) for n, s in sparsities.items()) == want, label
    perturbed = [s for label, s in found.items() if label.startswith("perturbed")]
    assert all(p != found["global-mp"] for p in perturbed)


def test_resume_keeps_only_rows_whose_allocation_is_unchanged(bench, tmp_path) -> None:
    from _common import write_csv  # on the path once the bench is loaded

    allocations = {"global-mp": {"a": 0.5, "b": 0.9}, "erk": {"a": 0.7, "b": 0.8}, "lamp": {"a": 0.6, "b": 0.85}}
    path = tmp_path / "allocations.csv"
    write_csv(path, [
        {"allocation": "global-mp", "oneshot": 11.5, "truth_test_top1": 90.0, "layer_sparsity": {"a": 0.5, "b": 0.9}},
        {"allocation": "erk", "oneshot": 12.0, "truth_test_top1": 91.0, "layer_sparsity": {"a": 0.1, "b": 0.8}},
        {"allocation": "gone", "oneshot": 1.0, "truth_test_top1": 9.0, "layer_sparsity": {"a": 0.5, "b": 0.9}},
    ])
    kept = bench.resumed_rows(path, allocations)
    assert [r["allocation"] for r in kept] == ["global-mp"]  # erk's sparsities changed; "gone" is not asked for
    assert kept[0]["oneshot"] == 11.5 and kept[0]["truth_test_top1"] == 90.0
    assert kept[0]["layer_sparsity"] == {"a": 0.5, "b": 0.9}
    assert bench.resumed_rows(tmp_path / "missing.csv", allocations) == []


def test_fidelity_table_competitive_subset_and_the_baseline_a_proxy_picks(bench) -> None:
    truths = {"global-mp": 90.0, "global-mp+mt": 91.0, "erk": 94.0, "lamp": 95.0, "uniform": 60.0,
              "perturbed-0": 20.0, "perturbed-1": 93.0, "perturbed-2": 94.5}
    rows = []
    for label, truth in truths.items():
        # "good" ranks the collapsed ones last but the competitive ones backwards; "right" is the truth itself
        good = truth if truth < 92 else 200 - truth
        rows.append({"allocation": label, "truth_test_top1": truth, "good": good, "good_s": 1.0,
                     "right": truth, "right_s": 2.0})
    table = bench.fidelity_table(rows, [("good", "good"), ("right", "right")], margin=3.0, resamples=200, seed=0)
    good, right = table
    assert right["spearman"] == pytest.approx(1.0) and right["competitive_spearman"] == pytest.approx(1.0)
    assert good["competitive_spearman"] == pytest.approx(-1.0)  # 93, 94, 94.5, 95: exactly reversed
    assert good["spearman"] > 0  # over all allocations it still looks useful: the subset is what tells
    assert (right["baseline_picked"], right["baseline_regret"]) == ("lamp", 0.0)
    assert (good["baseline_picked"], good["baseline_regret"]) == ("erk", -1.0)  # 106 > lamp's 105 > mt's 91
    assert (right["top_pick"], right["top_pick_regret"]) == ("lamp", 0.0)
    assert (good["top_pick"], good["top_pick_regret"]) == ("perturbed-1", -2.0)  # 107 tops 106 and 105.5
    assert right["median_s"] == 2.0


def test_recheck_names_the_stored_allocations_when_a_label_is_unknown(bench, tmp_path) -> None:
    rows = [{"allocation": "lamp", "truth_test_top1": 92.7, "layer_sparsity": {"a": 0.9}},
            {"allocation": "erk", "truth_test_top1": 92.7, "layer_sparsity": {"a": 0.8}}]
    with pytest.raises(SystemExit, match=r"no stored allocation \['lapm'\]; stored: \['erk', 'lamp'\]"):
        bench.rows_named(rows, ["lamp", "lapm"])
    assert not (tmp_path / "recheck.csv").exists()  # nothing measured, nothing written
    assert list(bench.rows_named(rows, ["lamp", "erk"])) == ["lamp", "erk"]  # in the order asked
