"""Global MP: exact counts, deterministic ties, agreement with torch, MT, collapse detection."""

from __future__ import annotations

import contextlib
import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.utils.prune as torch_prune
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from purl import baselines
from purl.baselines import _select
from purl.baselines.base import LayerCollapseWarning, collapsed_layers
from purl.baselines.global_mp import GlobalMagnitude, global_magnitude_prune
from purl.errors import ConfigError, PruningError
from purl.pruning import MaskState, find_prunable_layers
from purl.pruning.constraints import Constraints

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------ helpers
def linear_model(sizes, seed=0, ties=False, zeros=0.0):
    torch.manual_seed(seed)
    model = nn.ModuleList([nn.Linear(i, o, bias=False) for i, o in sizes])
    with torch.no_grad():
        for m in model:
            m.weight.normal_()
            if ties:  # few distinct magnitudes: masses of ties everywhere
                m.weight.copy_(torch.round(m.weight * 2) / 2)
            if zeros:
                m.weight.mul_(torch.rand(m.weight.shape) >= zeros)
    return model


def reference_keep(weights, k):
    """Brute force: sort all (|w|, layer, flat index) lexicographically, prune the first k."""
    if not weights:
        return []
    vals = np.concatenate([w.detach().abs().double().flatten().numpy() for w in weights])
    layer = np.concatenate([np.full(w.numel(), j) for j, w in enumerate(weights)])
    index = np.concatenate([np.arange(w.numel()) for w in weights])
    order = np.lexsort((index, layer, vals))
    keep = np.ones(len(vals), dtype=bool)
    keep[order[:k]] = False
    out, start = [], 0
    for w in weights:
        out.append(torch.from_numpy(keep[start:start + w.numel()].copy()).view(w.shape))
        start += w.numel()
    return out


def reference_in_layer(weight, k):
    vals = weight.detach().abs().double().flatten().numpy()
    order = np.lexsort((np.arange(len(vals)), vals))
    keep = np.ones(len(vals), dtype=bool)
    keep[order[:k]] = False
    return torch.from_numpy(keep).view(weight.shape)


def reference_mt(weights, k, caps):
    """Clamp-and-recompute reference for Global MP under per-layer caps."""
    keep = [None] * len(weights)
    active = [j for j in range(len(weights)) if caps[j] > 0]
    for j in range(len(weights)):
        if caps[j] <= 0:
            keep[j] = torch.ones(weights[j].shape, dtype=torch.bool)
    budget = k
    while True:
        masks = reference_keep([weights[j] for j in active], budget)
        pruned = {j: int((~m).sum()) for j, m in zip(active, masks, strict=True)}
        over = [j for j in active if pruned[j] > caps[j]]
        if not over:
            for j, m in zip(active, masks, strict=True):
                keep[j] = m
            return keep
        for j in over:
            keep[j] = reference_in_layer(weights[j], caps[j])
            budget -= caps[j]
        active = [j for j in active if j not in over]


# Selection modes exercising every path of baselines._select on small models:
#   exact: all keys in one band; sampled: the sampled bracket, several scratch groups and count chunks;
#   tight: zero-margin brackets (misses, wider retry, bisection); nobands: no band is ever extracted
#   (tie probe, bisection down to one value), one layer per group.
MODES = {
    "exact": {},
    "sampled": {"EXACT_CUTOFF": 0, "SAMPLE_SIZE": 64, "GROUP_SIZE": 100},
    "tight": {"EXACT_CUTOFF": 0, "SAMPLE_SIZE": 64, "MARGIN_SIGMAS": 0.0, "MARGIN_EXTRA": 0, "GROUP_SIZE": 37},
    "nobands": {"EXACT_CUTOFF": 0, "SAMPLE_SIZE": 64, "BAND_MIN": 0, "BAND_DIVISOR": 10**12, "GROUP_SIZE": 97},
}


@contextlib.contextmanager
def selection_mode(mode):
    old = {name: getattr(_select, name) for name in MODES[mode]}
    try:
        for name, value in MODES[mode].items():
            setattr(_select, name, value)
        yield
    finally:
        for name, value in old.items():
            setattr(_select, name, value)


def prune_with_masks(model, s, **kw):
    masks = MaskState(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LayerCollapseWarning)
        result = global_magnitude_prune(model, s, masks=masks, **kw)
    return masks, result


sizes_st = st.lists(st.tuples(st.integers(1, 12), st.integers(1, 12)), min_size=1, max_size=5)


# ------------------------------------------------------------------------------ exactness
@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("ties", [False, True])
def test_exact_targets_including_edges(mode, ties):
    model = linear_model([(30, 20), (5, 3), (40, 10), (7, 1)], seed=1, ties=ties)
    weights = [layer.weight.detach().clone() for layer in find_prunable_layers(model)]
    n = sum(w.numel() for w in weights)
    for s in [0.0, 1 / n, 2 / n, 0.5, 0.9, 0.999, 1 - 1 / n, 1.0]:
        m = copy.deepcopy(model)
        with selection_mode(mode):
            masks, result = prune_with_masks(m, s)
        k = round(s * n)
        assert sum(masks.pruned().values()) == k == result.pruned
        expected = reference_keep(weights, k)
        for name, exp in zip(masks.names, expected, strict=True):
            assert torch.equal(masks.masks[name], exp), (s, name)


@FAST
@given(sizes=sizes_st, seed=st.integers(0, 10_000), frac=st.floats(0, 1), ties=st.booleans(),
       mode=st.sampled_from(sorted(MODES)))
def test_exact_and_deterministic_property(sizes, seed, frac, ties, mode):
    model = linear_model(sizes, seed=seed, ties=ties)
    weights = [layer.weight.detach().clone() for layer in find_prunable_layers(model)]
    n = sum(w.numel() for w in weights)
    with selection_mode(mode):
        masks, result = prune_with_masks(model, frac)
    k = round(frac * n)
    assert result.pruned == k == n - sum(int(m.sum()) for m in masks.masks.values())
    for name, exp in zip(masks.names, reference_keep(weights, k), strict=True):
        assert torch.equal(masks.masks[name], exp)


def test_masks_equal_torch_global_unstructured_without_ties():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 16, 3), nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():  # distinct magnitudes: a random permutation of distinct values, random signs
        layers = find_prunable_layers(model)
        total = sum(layer.numel for layer in layers)
        values = (torch.randperm(total).float() + 1) / total * torch.where(torch.rand(total) < 0.5, -1.0, 1.0)
        start = 0
        for layer in layers:
            layer.weight.copy_(values[start:start + layer.numel].view(layer.weight.shape))
            start += layer.numel
    for s in [0.1, 0.5, 0.9, 0.99]:
        theirs = copy.deepcopy(model)
        params = [(layer.module, "weight") for layer in find_prunable_layers(theirs)]
        torch_prune.global_unstructured(params, pruning_method=torch_prune.L1Unstructured, amount=s)
        ours = copy.deepcopy(model)
        masks, _ = prune_with_masks(ours, s)
        for layer in find_prunable_layers(theirs):
            assert torch.equal(masks.masks[layer.name], layer.module.weight_mask.bool()), (s, layer.name)


def test_large_model_uses_sampling_and_matches_reference():
    model = linear_model([(300, 400), (500, 200), (10, 10)], seed=5)  # 220k weights > cutoff? force anyway
    weights = [layer.weight.detach().clone() for layer in find_prunable_layers(model)]
    old = _select.EXACT_CUTOFF
    _select.EXACT_CUTOFF = 1000
    try:
        for s in [0.3, 0.9, 0.9999]:
            m = copy.deepcopy(model)
            masks, result = prune_with_masks(m, s)
            for name, exp in zip(masks.names, reference_keep(weights, result.pruned), strict=True):
                assert torch.equal(masks.masks[name], exp)
    finally:
        _select.EXACT_CUTOFF = old


@pytest.mark.parametrize("mode", ["sampled", "nobands"])
@pytest.mark.parametrize("target", [0.8, 0.8 + 1e-4, 0.85, 0.5])
def test_massive_ties_at_zero_already_pruned_model(mode, target):
    """Re-pruning a pruned model (masses of exact zeros) stays exact (tie probe / bisection paths)."""
    model = linear_model([(50, 40), (30, 30), (20, 10)], seed=2, zeros=0.8)
    weights = [layer.weight.detach().clone() for layer in find_prunable_layers(model)]
    with selection_mode(mode):
        masks, result = prune_with_masks(model, target)
    for name, exp in zip(masks.names, reference_keep(weights, result.pruned), strict=True):
        assert torch.equal(masks.masks[name], exp)


def test_in_place_path_equals_mask_path_including_partial_ties():
    model = linear_model([(20, 20), (10, 30), (9, 9)], seed=4, ties=True)
    for s in [0.3, 0.5, 0.77, 0.95]:
        a, b = copy.deepcopy(model), copy.deepcopy(model)
        masks, _ = prune_with_masks(a, s)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LayerCollapseWarning)
            result = global_magnitude_prune(b, s)
        trios = zip(find_prunable_layers(b), find_prunable_layers(a), find_prunable_layers(model), strict=True)
        for layer, la, dense in trios:
            assert torch.equal(layer.weight, la.weight)
            assert torch.equal(layer.weight, dense.weight * masks.masks[layer.name])
        assert result.pruned == round(s * sum(x.numel for x in find_prunable_layers(model)))


def test_allocate_and_select_agree_with_fast_path():
    model = linear_model([(20, 20), (10, 30)], seed=7, ties=True)
    layers = find_prunable_layers(model)
    alloc = GlobalMagnitude()
    counts = alloc.allocate(layers, 0.6)
    keep = alloc.select(layers, counts)
    m2 = copy.deepcopy(model)
    masks, _ = prune_with_masks(m2, 0.6)
    for name in counts:
        assert torch.equal(keep[name], masks.masks[name])


def test_dtypes_and_non_contiguous_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 1)).to(memory_format=torch.channels_last)
    assert not model[0].weight.is_contiguous()
    dense = [layer.weight.detach().clone() for layer in find_prunable_layers(model)]
    result = global_magnitude_prune(model, 0.5)
    expected = reference_keep(dense, result.pruned)
    for layer, d, e in zip(find_prunable_layers(model), dense, expected, strict=True):
        assert torch.equal(layer.weight, d * e)
    for dtype in (torch.float64, torch.float16, torch.bfloat16):
        m = linear_model([(10, 10), (5, 8)], seed=1).to(dtype)
        dense = [layer.weight.detach().clone() for layer in find_prunable_layers(m)]
        result = global_magnitude_prune(m, 0.6)
        assert result.pruned == round(0.6 * 140)
        for layer, d, e in zip(find_prunable_layers(m), dense, reference_keep(dense, result.pruned), strict=True):
            assert torch.equal(layer.weight, d * e.to(dtype))


# ------------------------------------------------------------------------------ MT
def test_min_threshold_honoured_in_every_layer_at_99_percent_without_collapse():
    torch.manual_seed(0)
    model = nn.ModuleList([nn.Linear(200, 100, bias=False), nn.Linear(100, 50, bias=False),
                           nn.Linear(50, 10, bias=False), nn.Linear(3, 2, bias=False)])
    with torch.no_grad():
        model[2].weight.mul_(1e-3)  # small, low-magnitude layer: vanilla Global MP would wipe it out
    layers = find_prunable_layers(model)
    total = sum(layer.numel for layer in layers)
    dense = [layer.weight.detach().clone() for layer in layers]
    masks = MaskState(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LayerCollapseWarning)  # any collapse fails the test
        result = global_magnitude_prune(model, 0.99, min_threshold=0.2, masks=masks)
    floor = int(total * 0.2 / 100)  # 0.2 % of all 25,506 weights = 51
    assert floor == 51
    assert result.pruned == round(0.99 * total)
    assert result.collapsed == []
    kept = {name: int(m.sum()) for name, m in masks.masks.items()}
    assert kept["3"] == 6  # smaller than the floor: dense
    for name in ("0", "1", "2"):
        assert kept[name] >= floor
    caps = Constraints(min_threshold=0.2).max_pruned(layers)
    expected = reference_mt(dense, result.pruned, [caps[layer.name] for layer in layers])
    for layer, e in zip(layers, expected, strict=True):
        assert torch.equal(masks.masks[layer.name], e)


@FAST
@given(sizes=sizes_st, seed=st.integers(0, 1000), frac=st.floats(0, 1), mt=st.floats(0, 30), ties=st.booleans(),
       mode=st.sampled_from(sorted(MODES)))
def test_min_threshold_property(sizes, seed, frac, mt, ties, mode):
    model = linear_model(sizes, seed=seed, ties=ties)
    layers = find_prunable_layers(model)
    constraints = Constraints(min_threshold=mt)
    caps = constraints.max_pruned(layers)
    total = sum(layer.numel for layer in layers)
    k = round(frac * total)
    dense = [layer.weight.detach().clone() for layer in layers]
    if k > sum(caps.values()):
        with pytest.raises(PruningError, match="at most"):
            global_magnitude_prune(model, frac, min_threshold=mt)
        return
    with selection_mode(mode):
        masks, result = prune_with_masks(model, frac, min_threshold=mt)
    assert result.pruned == k
    expected = reference_mt(dense, k, [caps[layer.name] for layer in layers])
    for layer, e in zip(layers, expected, strict=True):
        assert torch.equal(masks.masks[layer.name], e)
        assert result.counts[layer.name] <= caps[layer.name]


def test_infeasible_target_under_mt_says_max_reachable():
    model = linear_model([(10, 10), (10, 10)])
    with pytest.raises(PruningError, match=r"not reachable .* at most 0\.5 \(100 weights\)"):
        global_magnitude_prune(model, 0.9, min_weights=50)


def test_other_constraints_keep_dense_and_max_sparsity():
    model = nn.Sequential()
    model.add_module("a", nn.Linear(20, 20, bias=False))
    model.add_module("b", nn.Linear(20, 10, bias=False))
    model.add_module("fc", nn.Linear(10, 5, bias=False))
    result = global_magnitude_prune(model, 0.6, keep_dense=("fc",), max_sparsity=0.7)
    assert result["fc"] == 0.0
    assert result.counts["a"] <= 280 and result.counts["b"] <= 140
    assert result.pruned == round(0.6 * 650)


# ------------------------------------------------------------------------------ collapse
def test_vanilla_collapse_detected_warned_and_listed(make_collapse_prone_model):
    model = make_collapse_prone_model()
    dense_tiny = model.tiny.weight.detach().clone()
    with pytest.warns(LayerCollapseWarning, match="tiny") as record:
        result = global_magnitude_prune(model, 0.95)
    assert len([w for w in record if issubclass(w.category, LayerCollapseWarning)]) == 1  # once per call
    assert result.collapsed == ["tiny"]
    assert result["tiny"] == 1.0
    layers = find_prunable_layers(model)
    assert collapsed_layers(result.counts, layers) == ["tiny"]
    assert torch.count_nonzero(model.tiny.weight) == 0
    # the same request with a minimum-weights floor keeps every layer alive
    model.tiny.weight.data.copy_(dense_tiny)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LayerCollapseWarning)
        result = global_magnitude_prune(model, 0.95, min_weights=10)
    assert result.collapsed == [] and result.counts["tiny"] == 40


# ------------------------------------------------------------------------------ API
def test_include_exclude_and_masks_argument():
    model = nn.Sequential()
    model.add_module("conv", nn.Conv2d(1, 4, 3))
    model.add_module("fc1", nn.Linear(10, 10))
    model.add_module("fc2", nn.Linear(10, 10))
    dense_conv = model.conv.weight.detach().clone()
    result = global_magnitude_prune(model, 0.5, exclude=("conv",))
    assert set(result) == {"fc1", "fc2"}
    assert torch.equal(model.conv.weight, dense_conv)
    assert result.pruned == 100
    masks = MaskState(model)
    result = global_magnitude_prune(model, 0.5, include=("fc*",), masks=masks)
    assert set(result) == {"fc1", "fc2"} and masks.sparsities()["conv"] == 0.0
    with pytest.raises(PruningError, match="different model"):
        global_magnitude_prune(copy.deepcopy(model), 0.5, masks=masks)
    with pytest.raises(PruningError, match="no prunable layer left"):
        global_magnitude_prune(model, 0.5, include=("nothing",), masks=masks)
    with pytest.raises(ConfigError):
        global_magnitude_prune(model, 0.5, min_threshold=-1)
    with pytest.raises(PruningError, match=r"\[0, 1\]"):
        global_magnitude_prune(model, 1.5)


def test_result_object_and_exports():
    model = linear_model([(10, 10), (10, 4)])
    result = baselines.global_magnitude_prune(model, 0.25)
    assert isinstance(result, dict) and isinstance(result, baselines.PruningResult)
    assert result.global_sparsity == 35 / 140
    assert result.total == 140 and result.pruned == 35
    assert "threshold" in result.info
    assert baselines.get_allocator("global-mp").name == "global-mp"


def test_masks_persist_through_training_after_global_mp():
    model = linear_model([(8, 6), (6, 4)], seed=9)
    masks = MaskState(model)
    global_magnitude_prune(model, 0.7, masks=masks)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    masks.attach(opt)
    for _ in range(3):
        x = torch.randn(5, 8)
        loss = model[1](model[0](x)).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for name, mask in masks.masks.items():
        assert torch.count_nonzero(masks.layer(name).weight[~mask]) == 0
