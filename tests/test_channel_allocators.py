"""Channel allocators (baselines/channel.py): FLOPs/params budgets land, constraints hold, clear errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import purl.baselines.channel as channel_allocators
from purl.baselines import ERK, LAMP, GlobalMagnitude, RandomPruning, Uniform
from purl.baselines.channel import (
    ChannelConstraints,
    channel_cost,
    channel_erk,
    channel_global_mp,
    channel_lamp,
    channel_tolerance,
    channel_uniform,
    get_channel_allocator,
    keep_for_ratio,
)
from purl.errors import PruningError, RegistryError
from purl.models import build_model
from purl.pruning.channels import channel_graph, measure_model, prune_channels

torch.set_num_threads(1)
X = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def resnet20() -> nn.Module:
    torch.manual_seed(0)
    return build_model("resnet-20", input_shape=(1, 8, 8), num_classes=10).eval()


@pytest.fixture(scope="module")
def graph(resnet20: nn.Module):
    return channel_graph(resnet20, X)


@pytest.mark.parametrize("method", ["global-mp", "uniform", "erk", "lamp"])
@pytest.mark.parametrize("metric", ["flops", "params"])
@pytest.mark.parametrize("ratio", [0.7, 0.5, 0.25])
def test_budget_lands_within_one_channel(graph, method: str, metric: str, ratio: float) -> None:
    keep = keep_for_ratio(graph, ratio, metric=metric, method=method)
    dense = graph.dense_macs if metric == "flops" else graph.dense_params
    cost = channel_cost(graph, keep, metric)
    target = ratio * dense
    assert cost <= target  # never above the budget
    assert target - cost < channel_tolerance(graph, metric)  # below it by less than one channel's cost
    assert all(1 <= keep[g.name] <= g.size for g in graph.groups)


@pytest.mark.parametrize("method", ["global-mp", "uniform", "erk", "lamp"])
def test_slimmed_model_has_the_budgeted_flops_and_runs(resnet20: nn.Module, graph, method: str) -> None:
    keep = keep_for_ratio(graph, 0.5, method=method)
    slim = prune_channels(resnet20, X, keep).eval()
    cost = measure_model(slim, X)
    assert cost.macs == channel_cost(graph, keep, "flops") <= 0.5 * graph.dense_macs
    assert cost.params == channel_cost(graph, keep, "params")
    for stage in (slim.layer1, slim.layer2, slim.layer3):  # residual additions still line up
        widths = {b.conv2.out_channels for b in stage} | {b.bn2.num_features for b in stage}
        widths |= {b.shortcut[0].out_channels for b in stage if isinstance(b.shortcut, nn.Sequential)}
        assert len(widths) == 1
    with torch.no_grad():
        assert slim(torch.randn(3, 1, 8, 8)).shape == (3, 10)


def test_uniform_fractions_differ_by_less_than_one_channel(graph) -> None:
    keep = channel_uniform(graph, 0.4)
    fractions = [(g.size - keep[g.name]) / g.size for g in graph.groups]
    assert max(fractions) - min(fractions) <= 1 / min(g.size for g in graph.groups) + 1e-12


def test_minimum_threshold_and_keep_dense(graph) -> None:
    constraints = ChannelConstraints(min_channels=6, keep_dense=("layer3.*",))
    for allocate in (channel_global_mp, channel_uniform, channel_erk, channel_lamp):
        keep = allocate(graph, 0.4, constraints=constraints)
        for g in graph.groups:
            assert keep[g.name] >= min(6, g.size)
            if g.name.startswith("layer3."):
                assert keep[g.name] == g.size
    with pytest.raises(PruningError, match=r"min_channels \(the Minimum Threshold in channels\) must be"):
        ChannelConstraints(min_channels=0)


def test_global_mp_normalisation_is_per_layer_scale_free(resnet20: nn.Module, graph) -> None:
    """Multiplying one layer's weights by 100 must not change the channel Global MP plan (raw norms would)."""
    keep = channel_global_mp(graph, 0.5)
    scaled = copy.deepcopy(resnet20)
    with torch.no_grad():
        scaled.layer2[1].conv1.weight.mul_(100.0)
    keep_scaled = channel_global_mp(channel_graph(scaled, X), 0.5)
    assert keep_scaled == keep
    # and it is not uniform: channel importance spreads unevenly across groups
    assert keep != channel_uniform(graph, 0.5)


def test_erk_keeps_more_of_thin_layers(graph) -> None:
    """Channel ERK: a group's kept fraction follows its producers' ERK factor, so the stem (3x3 conv from one image
    channel: a large factor) keeps more of its channels than a 64-channel stage-3 group."""
    keep = channel_erk(graph, 0.4)
    kept = {g.name: keep[g.name] / g.size for g in graph.groups}
    stem = next(g.name for g in graph.groups if "conv1" in g.producers)
    deep = [g.name for g in graph.groups if all(p.startswith("layer3.") for p in g.producers)]
    assert deep and kept[stem] > max(kept[name] for name in deep)
    assert keep != channel_uniform(graph, 0.4)


def test_lamp_is_per_group_scale_free_and_differs_from_global_mp(resnet20: nn.Module, graph) -> None:
    keep = channel_lamp(graph, 0.5)
    scaled = copy.deepcopy(resnet20)
    with torch.no_grad():
        scaled.layer2[1].conv1.weight.mul_(100.0)
    assert channel_lamp(channel_graph(scaled, X), 0.5) == keep
    assert keep != channel_global_mp(graph, 0.5) and keep != channel_uniform(graph, 0.5)
    assert all(keep[g.name] >= 1 for g in graph.groups)


def test_unreachable_target_is_one_clear_line(graph) -> None:
    with pytest.raises(PruningError) as info:
        channel_global_mp(graph, 0.001, constraints=ChannelConstraints(min_channels=4))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("global-mp: a flops keep ratio of 0.001 is below what the constraints allow")
    assert "min_channels=4" in message


@pytest.mark.parametrize("ratio", [0, 0.0, 1.5, -0.2, True, float("nan")])
def test_bad_ratios(graph, ratio: float) -> None:
    with pytest.raises(PruningError, match=r"flops keep ratio must be a number in \(0, 1\]"):
        channel_uniform(graph, ratio)


def test_allocator_names(graph, capsys, monkeypatch) -> None:
    """The weight allocators' own names run their channel forms; the old channel-only names are aliases that say
    (once) which name to use; the allocators without a channel form are one line naming those with one."""
    monkeypatch.setattr(channel_allocators, "_NOTIFIED", set())
    forms = {"global-mp": GlobalMagnitude, "uniform": Uniform, "erk": ERK, "lamp": LAMP, "random": RandomPruning}
    for name, cls in forms.items():
        assert type(get_channel_allocator(name)) is cls
    assert channel_allocators.channel_allocators() == ("erk", "global-mp", "lamp", "layerwise", "random", "uniform")
    assert type(get_channel_allocator("channel-global-mp")) is GlobalMagnitude
    assert type(get_channel_allocator("channel-uniform")) is Uniform
    get_channel_allocator("channel-uniform")
    assert capsys.readouterr().err.splitlines() == [  # once per name
        "note: method 'channel-global-mp' is deprecated; use 'global-mp' with prune.granularity=channel (the same "
        "allocator)",
        "note: method 'channel-uniform' is deprecated; use 'uniform' with prune.granularity=channel (the same "
        "allocator)"]
    with pytest.raises(PruningError, match="allocator 'uniform-plus' has no channel version \\(it declares "
                                           "granularities weight\\); channel allocators: erk, global-mp, lamp, "
                                           "layerwise, random, uniform"):
        get_channel_allocator("uniform-plus")
    with pytest.raises(RegistryError, match="unknown allocator 'nope'; allowed: erk, global-mp"):
        get_channel_allocator("nope")
    with pytest.raises(PruningError, match="unknown budget metric 'latency'; allowed: flops, params"):
        channel_uniform(graph, 0.5, metric="latency")


def test_erk_power_scale_reaches_the_channel_form(graph) -> None:
    """ERK's option changes its channel plan (0 is uniform's kept fraction for every group)."""
    default = get_channel_allocator("erk").keep_channels(graph, 0.5)
    flat = get_channel_allocator("erk", power_scale=0.0).keep_channels(graph, 0.5)
    assert flat != default
    assert flat == keep_for_ratio(graph, 0.5, method="uniform")


def test_random_channel_form_has_uniform_counts_and_seeded_random_channels(resnet20: nn.Module, graph) -> None:
    """random: uniform's counts; which channels go is a seeded draw (not the norm order), the same for the same
    seed, and the slimmed model runs."""
    allocator = get_channel_allocator("random")
    keep = allocator.keep_channels(graph, 0.5)
    assert keep == keep_for_ratio(graph, 0.5, method="uniform")
    draw = [allocator.drop_channels(graph, keep, generator=torch.Generator().manual_seed(s)) for s in (0, 0, 1)]
    assert draw[0] == draw[1] != draw[2]
    assert draw[0] != graph.removed(keep)
    assert all(len(idxs) == g.size - keep[g.name] for g in graph.groups for idxs in [draw[0].get(g.name, [])])
    slim = prune_channels(resnet20, X, keep, graph=graph, removed=draw[0]).eval()
    assert measure_model(slim, X).macs == channel_cost(graph, keep, "flops")
    assert slim(X).shape == (2, 10)
    with pytest.raises(PruningError, match="do not remove"):
        prune_channels(resnet20, X, keep, graph=graph, removed={})


def test_layerwise_channel_form_applies_or_rescales_its_map(graph) -> None:
    """layerwise at channel granularity: the map names groups and removed fractions; as given it is rounded down
    to the allowed steps, with rescale it lands the budget like the others; an unknown group is one line."""
    first, second = graph.groups[0], graph.groups[1]
    fractions = {first.name: 0.5, second.name: 0.26}
    keep = get_channel_allocator("layerwise", sparsities=fractions).keep_channels(graph, 0.5)  # no rescale: as given
    assert keep[first.name] == first.size - first.size // 2
    assert keep[second.name] == second.size - int(0.26 * second.size)
    assert all(keep[g.name] == g.size for g in graph.groups[2:])
    landed = get_channel_allocator("layerwise", sparsities=fractions, rescale=True).keep_channels(graph, 0.9)
    cost = channel_cost(graph, landed, "flops")
    assert 0.9 * graph.dense_macs - channel_tolerance(graph, "flops") < cost <= 0.9 * graph.dense_macs
    assert all(landed[g.name] == g.size for g in graph.groups[2:])  # unnamed groups stay whole
    with pytest.raises(PruningError, match="unknown channel group\\(s\\) nope"):
        get_channel_allocator("layerwise", sparsities={"nope": 0.5}).keep_channels(graph, None)


@pytest.mark.parametrize("method", ["global-mp", "uniform", "erk", "lamp"])
@pytest.mark.parametrize("multiple", [4, 8])
def test_channel_multiple_keeps_round_counts_and_still_lands(graph, method: str, multiple: int) -> None:
    constraints = ChannelConstraints(multiple=multiple)
    keep = keep_for_ratio(graph, 0.4, method=method, constraints=constraints)
    sizes = {g.name: g.size for g in graph.groups}
    assert all(k == sizes[n] or (k % multiple == 0 and k >= multiple) for n, k in keep.items()), keep
    assert any(k < sizes[n] for n, k in keep.items())
    tolerance = channel_tolerance(graph, "flops", constraints)
    assert 0.4 * graph.dense_macs - tolerance <= channel_cost(graph, keep, "flops") <= 0.4 * graph.dense_macs
    assert tolerance > channel_tolerance(graph, "flops")  # a step is several channels now


def test_channel_multiple_removals_respect_the_minimum_threshold(graph) -> None:
    group = next(g for g in graph.groups if g.size == 64)
    assert ChannelConstraints(multiple=16).removals(group) == [16, 32, 48]
    assert ChannelConstraints(multiple=16, min_channels=20).removals(group) == [16, 32]
    assert ChannelConstraints(multiple=1, min_channels=60).removals(group) == [1, 2, 3, 4]
    with pytest.raises(PruningError, match="multiple"):
        ChannelConstraints(multiple=0)
