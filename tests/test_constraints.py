"""Constraints: validation, the MT floor as a percentage, keep_dense, max_sparsity, feasibility."""

from __future__ import annotations

import dataclasses

import pytest
from torch import nn

from purl.errors import ConfigError, PruningError, PurlError
from purl.pruning.constraints import Constraints, floor_count
from purl.pruning.layers import find_prunable_layers


def make_layers(*sizes: tuple[int, int]):  # (in, out) per Linear
    model = nn.ModuleList([nn.Linear(i, o, bias=False) for i, o in sizes])
    return find_prunable_layers(model)


# ------------------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"min_threshold": -0.1}, "percentage"),
        ({"min_threshold": 101}, "[0, 100]"),
        ({"min_threshold": "5"}, "min_threshold must be a number"),
        ({"min_threshold": True}, "min_threshold must be a number"),
        ({"min_threshold": float("nan")}, "min_threshold must be a number"),
        ({"min_weights": -1}, "min_weights must be a non-negative integer"),
        ({"min_weights": 2.5}, "min_weights must be a non-negative integer"),
        ({"min_weights": True}, "min_weights must be a non-negative integer"),
        ({"min_threshold": 0.05, "min_weights": 10}, "not both"),
        ({"max_sparsity": 1.5}, "max_sparsity"),
        ({"max_sparsity": -0.1}, "max_sparsity"),
        ({"max_sparsity": None}, "max_sparsity"),
        ({"keep_dense": [""]}, "non-empty strings"),
        ({"keep_dense": [3]}, "non-empty strings"),
        ({"keep_dense": 5}, "sequence of layer-name patterns"),
    ],
)
def test_validation_errors_are_config_errors_with_clear_messages(kwargs, fragment):
    with pytest.raises(ConfigError) as info:
        Constraints(**kwargs)
    assert fragment in str(info.value)
    assert isinstance(info.value, PurlError)


def test_defaults_are_unconstrained_and_frozen():
    c = Constraints()
    assert c.unconstrained
    assert c.describe() == "no constraints"
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.min_threshold = 1.0  # type: ignore[misc]


def test_keep_dense_normalised_to_tuple():
    assert Constraints(keep_dense="fc").keep_dense == ("fc",)
    assert Constraints(keep_dense=["a", "b*"]).keep_dense == ("a", "b*")
    assert not Constraints(keep_dense=["a"]).unconstrained


# ------------------------------------------------------------------------------ semantics
def test_min_threshold_is_a_percentage_of_all_prunable_weights():
    # sizes 10*100=1000, 20*50=1000, 2*3=6 -> total 2006; MT 1% -> floor int(20.06) = 20
    layers = make_layers((10, 100), (20, 50), (2, 3))
    c = Constraints(min_threshold=1.0)
    assert c.min_kept(layers) == 20
    caps = c.max_pruned(layers)
    assert caps == {"0": 980, "1": 980, "2": 0}  # the 6-weight layer is below the floor: stays dense
    # 0.05 means 0.05 % (not 5 %)
    assert Constraints(min_threshold=0.05).min_kept(layers) == int(2006 * 0.05 / 100) == 1


def test_min_weights_absolute_floor():
    layers = make_layers((10, 10), (3, 3))
    assert Constraints(min_weights=20).max_pruned(layers) == {"0": 80, "1": 0}
    assert Constraints(min_weights=9).max_pruned(layers) == {"0": 91, "1": 0}  # n == floor -> 0


def test_keep_dense_patterns_and_unmatched_pattern_error():
    model = nn.Sequential()
    model.add_module("conv1", nn.Conv2d(1, 2, 3))
    model.add_module("fc", nn.Linear(4, 5))
    layers = find_prunable_layers(model)
    assert Constraints(keep_dense=("fc",)).max_pruned(layers) == {"conv1": 18, "fc": 0}
    assert Constraints(keep_dense=("conv*",)).max_pruned(layers) == {"conv1": 0, "fc": 20}
    with pytest.raises(PruningError, match="match no prunable layer"):
        Constraints(keep_dense=("fcc",)).max_pruned(layers)


def test_max_sparsity_cap_is_floored_robustly():
    assert floor_count(0.29, 100) == 29  # 0.29 * 100 == 28.999999999999996 in binary
    assert floor_count(0.8, 10) == 8
    assert floor_count(0.85, 10) == 8
    layers = make_layers((10, 10), (1, 7))
    assert Constraints(max_sparsity=0.29).max_pruned(layers) == {"0": 29, "1": 2}
    both = Constraints(min_weights=75, max_sparsity=0.29).max_pruned(layers)
    assert both == {"0": 25, "1": 0}


def test_feasible_max_sparsity_and_clear_infeasible_error():
    layers = make_layers((10, 100), (20, 50), (2, 3))  # 2006 weights, caps 980 + 980 + 0
    c = Constraints(min_threshold=1.0)
    assert c.feasible_max_sparsity(layers) == pytest.approx(1960 / 2006)
    assert c.target_count(layers, 0.5) == 1003
    with pytest.raises(PruningError) as info:
        c.target_count(layers, 0.99)
    msg = str(info.value)
    assert "not reachable" in msg and "at most 0.977069" in msg and "1960 weights" in msg
    assert "min_threshold=1%" in msg


def test_target_count_validates_sparsity_range():
    layers = make_layers((4, 4))
    with pytest.raises(PruningError, match=r"\[0, 1\]"):
        Constraints().target_count(layers, 1.2)
    assert Constraints().target_count(layers, 1.0) == 16
    assert Constraints().target_count(layers, 0.0) == 0


def test_check_counts_reports_offending_layers():
    layers = make_layers((10, 10), (3, 3))
    c = Constraints(min_weights=20)
    c.check_counts(layers, {"0": 80, "1": 0})
    with pytest.raises(PruningError, match=r"1: 1 > 0"):
        c.check_counts(layers, {"0": 80, "1": 1})
