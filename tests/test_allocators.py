"""All allocators: exact targets, constraints, hand-computed ERK / LAMP / Uniform(+), registry."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from purl import baselines
from purl.baselines import ALLOCATORS, Allocator, Constraints, get_allocator, list_allocators
from purl.baselines.base import LayerCollapseWarning
from purl.baselines.erk import ERK, erk_raw_density
from purl.baselines.lamp import LAMP, lamp_scores
from purl.baselines.layerwise import Layerwise
from purl.baselines.random_pruning import RandomPruning
from purl.baselines.uniform import Uniform
from purl.baselines.uniform_plus import UniformPlus
from purl.errors import ConfigError, PruningError, RegistryError
from purl.pruning import MaskState, find_prunable_layers

FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NAMES = ["global-mp", "uniform", "uniform-plus", "erk", "lamp", "random", "layerwise"]


def linear_model(sizes, seed=0):
    torch.manual_seed(seed)
    model = nn.ModuleList([nn.Linear(i, o, bias=False) for i, o in sizes])
    with torch.no_grad():
        for m in model:
            m.weight.normal_()
    return model


def make(name, layers):
    if name == "layerwise":  # a profile that is rescaled to any target
        return get_allocator(name, sparsities={layer.name: 0.5 for layer in layers}, rescale=True)
    return get_allocator(name)


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LayerCollapseWarning)
        return fn(*args, **kwargs)


# ------------------------------------------------------------------------------ registry
def test_registry_names_and_descriptions():
    assert ALLOCATORS.names() == sorted(NAMES)
    described = list_allocators()
    assert set(described) == set(NAMES)
    assert all(described.values())
    for name in NAMES:
        cls = ALLOCATORS.get(name)
        assert issubclass(cls, Allocator) and cls.name == name
        assert re.search(r"(19|20)\d\d", sys.modules[cls.__module__].__doc__)  # cites its paper


def test_get_allocator_errors_and_module_paths():
    assert isinstance(get_allocator("uniform"), Uniform)
    assert isinstance(get_allocator("UNIFORM"), Uniform)
    assert isinstance(get_allocator("purl.baselines.erk:ERK", power_scale=0.5), ERK)
    instance = Uniform()
    assert get_allocator(instance) is instance
    with pytest.raises(RegistryError, match="allowed: erk, global-mp"):
        get_allocator("magnitude")
    with pytest.raises(ConfigError, match="does not accept options \\['foo'\\]"):
        get_allocator("uniform", foo=1)
    with pytest.raises(ConfigError, match="sparsities"):
        get_allocator("layerwise")
    with pytest.raises(RegistryError, match="not an Allocator"):
        get_allocator("purl.errors:PurlError")


def test_purl_core_never_imports_baselines():
    root = Path(__file__).resolve().parents[1]
    offenders = [  # no module-level import anywhere in purl (the CLI may import lazily inside commands)
        str(p) for p in (root / "purl").rglob("*.py")
        if re.search(r"^(from|import)\s+baselines\b", p.read_text(), flags=re.MULTILINE)
    ]
    assert offenders == []
    code = ("import sys, purl, purl.pruning, purl.pruning.constraints, purl.registry; "
            "print(any(m == 'purl.baselines' or m.startswith('purl.baselines.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(root)})
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------ exactness, all allocators
@pytest.mark.parametrize("name", NAMES)
def test_every_allocator_reaches_exact_targets(name):
    model = linear_model([(30, 20), (5, 3), (40, 10), (7, 2)], seed=1)
    layers = find_prunable_layers(model)
    n = sum(layer.numel for layer in layers)
    for s in [0.0, 1 / n, 0.5, 0.9, 0.999]:
        alloc = make(name, layers)
        try:
            counts = quiet(alloc.allocate, layers, s, generator=torch.Generator().manual_seed(0))
        except PruningError as exc:  # only Uniform+ has an unreachable range (first layer dense)
            assert name == "uniform-plus" and "at most" in str(exc)
            continue
        assert sum(counts.values()) == round(s * n)
        m = copy.deepcopy(model)
        masks = MaskState(m)
        result = quiet(alloc.prune, masks, s, generator=torch.Generator().manual_seed(0))
        assert sum(masks.pruned().values()) == round(s * n) == result.pruned
        assert masks.pruned() == counts


@FAST
@given(
    name=st.sampled_from(NAMES),
    sizes=st.lists(st.tuples(st.integers(1, 12), st.integers(1, 12)), min_size=1, max_size=5),
    seed=st.integers(0, 1000),
    frac=st.floats(0, 1),
    kind=st.sampled_from(["none", "mt", "cap", "dense", "min_weights"]),
    value=st.floats(0, 1),
)
def test_allocators_exact_under_constraints_property(name, sizes, seed, frac, kind, value):
    model = linear_model(sizes, seed=seed)
    layers = find_prunable_layers(model)
    constraints = {
        "none": Constraints(),
        "mt": Constraints(min_threshold=value * 20),
        "cap": Constraints(max_sparsity=value),
        "dense": Constraints(keep_dense=(layers[-1].name,)),
        "min_weights": Constraints(min_weights=int(value * 30)),
    }[kind]
    alloc = make(name, layers)
    total = sum(layer.numel for layer in layers)
    k = round(frac * total)
    caps = alloc.caps(layers, constraints) if isinstance(alloc, UniformPlus) else constraints.max_pruned(layers)
    if k > sum(caps.values()):
        with pytest.raises(PruningError, match="at most"):
            alloc.allocate(layers, frac, constraints)
        return
    counts = quiet(alloc.allocate, layers, frac, constraints, generator=torch.Generator().manual_seed(seed))
    assert sum(counts.values()) == k
    for layer in layers:
        assert 0 <= counts[layer.name] <= caps[layer.name]
    masks = MaskState(model)
    quiet(alloc.prune, masks, frac, constraints, generator=torch.Generator().manual_seed(seed))
    assert masks.pruned() == counts


# ------------------------------------------------------------------------------ uniform / uniform+
def test_uniform_largest_remainder_by_hand():
    layers = find_prunable_layers(linear_model([(10, 10), (5, 3), (7, 1)]))  # 100, 15, 7 weights
    # s = 0.5 -> 61 weights: exact shares 50, 7.5, 3.5 -> floors 60, the tie of remainders goes to the earlier layer
    assert Uniform().allocate(layers, 0.5) == {"0": 50, "1": 8, "2": 3}
    # first layer kept dense: 12 weights over 15 + 7 at one common sparsity 12/22 -> 8.18, 3.82 -> 8, 4
    assert Uniform().allocate(layers, 0.1, Constraints(keep_dense=("0",))) == {"0": 0, "1": 8, "2": 4}


def test_uniform_plus_by_hand():
    # first (4 in, 3 out) = 12 weights dense; last 20 weights at most 80 % = 16; middle 100 and 50
    layers = find_prunable_layers(linear_model([(4, 3), (10, 10), (10, 5), (2, 10)]))
    total = 12 + 100 + 50 + 20
    k = round(0.9 * total)  # 164
    # uncapped common sparsity 164/170 would prune 19.3 of the last layer > 16: cap it, then
    # c = (164 - 16) / 150 -> 98.67 and 49.33 -> floors 98 + 49 + 16 = 163, +1 to the larger remainder
    assert k == 164
    assert UniformPlus().allocate(layers, 0.9) == {"0": 0, "1": 99, "2": 49, "3": 16}
    with pytest.raises(PruningError, match="uniform-plus rules"):
        UniformPlus().allocate(layers, 0.99)
    assert UniformPlus(first_dense=False, last_max_sparsity=1.0).allocate(layers, 0.5) == Uniform().allocate(
        layers, 0.5)
    with pytest.raises(ConfigError):
        UniformPlus(last_max_sparsity=2)


# ------------------------------------------------------------------------------ ERK
def erk_net():
    model = nn.Sequential()
    model.add_module("conv", nn.Conv2d(2, 4, 3, bias=False))  # weight (4, 2, 3, 3): 72 weights, dims sum 12
    model.add_module("fc1", nn.Linear(8, 3, bias=False))  # (3, 8): 24 weights, ER (8 + 3) / (8 * 3)
    model.add_module("fc2", nn.Linear(3, 2, bias=False))  # (2, 3): 6 weights, (3 + 2) / 6
    return model


def test_erk_densities_by_hand():
    layers = find_prunable_layers(erk_net())
    assert erk_raw_density((3, 8)) == pytest.approx((8 + 3) / (8 * 3))
    assert erk_raw_density((4, 2, 3, 3)) == pytest.approx(12 / 72)
    # s = 0.5 keeps 51 of 102. First eps = 51 / (12 + 11 + 5) = 1.821 makes fc2's density 1.821 * 5/6 > 1,
    # so fc2 is dense (6 kept) and eps = (51 - 6) / (12 + 11) = 45/23 on the rest.
    eps = 45 / 23
    expected = {"conv": eps * 12 / 72, "fc1": eps * 11 / 24, "fc2": 1.0}
    got = ERK().densities(layers, 0.5)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-12)
    # kept 23.478 and 21.522 -> floors 23 + 21 + 6 = 50, the extra one to fc1 (remainder .52 > .48)
    assert ERK().allocate(layers, 0.5) == {"conv": 72 - 23, "fc1": 24 - 22, "fc2": 0}


def test_erk_without_capping_and_power_scale():
    layers = find_prunable_layers(erk_net())
    # s = 0.9 keeps round(10.2) = 10: eps = 10/28, fc2 density 10/28 * 5/6 < 1 -> no layer capped
    got = ERK().densities(layers, 0.9)
    assert got["fc2"] == pytest.approx(10 / 28 * 5 / 6)
    assert got["conv"] == pytest.approx(10 / 28 * 12 / 72)
    soft = ERK(power_scale=0.0).densities(layers, 0.9)  # power 0: uniform density
    assert soft["conv"] == pytest.approx(10 / 102) and soft["fc2"] == pytest.approx(10 / 102)
    with pytest.raises(ConfigError):
        ERK(power_scale=-1)


# ------------------------------------------------------------------------------ LAMP
def lamp_net():
    model = nn.Sequential()
    model.add_module("a", nn.Linear(4, 1, bias=False))
    model.add_module("b", nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model.a.weight.copy_(torch.tensor([[1.0, -3.0, 2.0, 0.5]]))
        model.b.weight.copy_(torch.tensor([[0.1, 0.2]]))
    return model


def test_lamp_scores_by_hand():
    model = lamp_net()
    # a: squares sorted .25, 1, 4, 9 with tail sums 14.25, 14, 13, 9
    expected_a = torch.tensor([[1 / 14, 9 / 9, 4 / 13, 0.25 / 14.25]], dtype=torch.float64)
    assert torch.allclose(lamp_scores(model.a.weight), expected_a, rtol=1e-12)
    expected_b = torch.tensor([[0.01 / 0.05, 0.04 / 0.04]], dtype=torch.float64)
    assert torch.allclose(lamp_scores(model.b.weight), expected_b, rtol=1e-6)
    assert torch.equal(lamp_scores(torch.zeros(3, 2)), torch.zeros(3, 2, dtype=torch.float64))


def test_lamp_global_threshold_on_scores_by_hand():
    layers = find_prunable_layers(lamp_net())
    # global score order: a.0.5 (.0175), a.1 (.0714), b.0.1 (.2), a.2 (.3077), a.-3 (1), b.0.2 (1)
    assert LAMP().allocate(layers, 3 / 6) == {"a": 2, "b": 1}  # Global MP would prune all of b instead
    assert LAMP().allocate(layers, 4 / 6) == {"a": 3, "b": 1}
    assert quiet(LAMP().allocate, layers, 5 / 6) == {"a": 4, "b": 1}  # score tie at 1: earlier layer first
    assert quiet(baselines.GlobalMagnitude().allocate, layers, 3 / 6) == {"a": 1, "b": 2}
    model = lamp_net()
    masks = MaskState(model)
    LAMP().prune(masks, 0.5)
    assert masks.masks["a"].tolist() == [[False, True, True, False]]
    assert masks.masks["b"].tolist() == [[False, True]]


# ------------------------------------------------------------------------------ random
def test_random_reproducible_and_uniform_counts():
    model = linear_model([(20, 10), (10, 10)])
    layers = find_prunable_layers(model)
    alloc = RandomPruning()
    a = alloc.select(layers, alloc.allocate(layers, 0.5), generator=torch.Generator().manual_seed(1))
    b = alloc.select(layers, alloc.allocate(layers, 0.5), generator=torch.Generator().manual_seed(1))
    c = alloc.select(layers, alloc.allocate(layers, 0.5), generator=torch.Generator().manual_seed(2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert {k: int((~v).sum()) for k, v in a.items()} == Uniform().allocate(layers, 0.5)
    magnitude = Uniform().select(layers, Uniform().allocate(layers, 0.5))
    assert not all(torch.equal(a[k], magnitude[k]) for k in a)


# ------------------------------------------------------------------------------ layerwise
def test_layerwise_map_semantics():
    model = linear_model([(10, 10), (5, 4), (3, 3)])  # 100, 20, 9
    layers = find_prunable_layers(model)
    lw = Layerwise({"0": 0.5, "1": 0.25})
    assert lw.allocate(layers, None) == {"0": 50, "1": 5, "2": 0}  # missing layer -> dense
    assert lw.allocate(layers, 55 / 129) == {"0": 50, "1": 5, "2": 0}  # consistent target
    odd = Layerwise({"0": 0.505, "1": 0.125})  # 50.5 and 2.5: target 53 or 54 reachable by rounding
    assert sum(odd.allocate(layers, 53 / 129).values()) == 53
    assert sum(odd.allocate(layers, 54 / 129).values()) == 54
    with pytest.raises(PruningError, match="inconsistent with the target 0.9"):
        lw.allocate(layers, 0.9)
    scaled = Layerwise({"0": 0.5, "1": 0.25}, rescale=True).allocate(layers, 110 / 129)
    assert scaled == {"0": 100, "1": 10, "2": 0}  # the 50 + 5 profile doubled to reach 110
    with pytest.raises(PruningError, match=r"unknown layer\(s\) \['fc'\]"):
        Layerwise({"fc": 0.5}).allocate(layers, None)
    with pytest.raises(ConfigError, match="numbers in \\[0, 1\\]"):
        Layerwise({"0": 1.5})
    with pytest.raises(PruningError, match="break"):
        Layerwise({"0": 0.95}).allocate(layers, None, Constraints(max_sparsity=0.9))
    masks = MaskState(model)
    result = lw.prune(masks, None)
    assert result == {"0": 0.5, "1": 0.25, "2": 0.0}
    with pytest.raises(PruningError, match="needs a global target"):
        Uniform().prune(masks, None)


# ------------------------------------------------------------------------------ interface
def test_prune_model_in_place_and_custom_allocator_guard():
    model = linear_model([(10, 10), (10, 5)])
    dense = [layer.weight.detach().clone() for layer in find_prunable_layers(model)]
    result = ERK().prune_model(model, 0.6)
    for layer, d in zip(find_prunable_layers(model), dense, strict=True):
        nz = int(torch.count_nonzero(layer.weight))
        assert nz == layer.numel - result.counts[layer.name]
        assert torch.equal(layer.weight != 0, (layer.weight == d) & (d != 0))

    class Broken(Allocator):
        name = "broken"

        def allocate(self, layers, sparsity, constraints=Constraints(), *, generator=None):
            return {layer.name: 1 for layer in layers}

    with pytest.raises(PruningError, match="pruned 2 weights instead of 75"):
        Broken().prune(MaskState(model), 0.5)
