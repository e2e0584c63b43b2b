"""Channel (structured) pruning with Torch-Pruning: groups, scores, slimming, masked twin, costs, errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from purl.errors import PruningError
from purl.models import build_model
from purl.pruning.channels import (
    channel_graph,
    channel_groups,
    channel_scores,
    keep_from_fraction,
    mask_channels,
    measure_model,
    prune_channels,
)
from tests.batchnorm import randomise_batchnorm

torch.set_num_threads(1)


@pytest.fixture
def resnet20() -> nn.Module:
    torch.manual_seed(0)
    return randomise_batchnorm(build_model("resnet-20", input_shape=(1, 8, 8), num_classes=10))


X8 = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))


class CatNet(nn.Module):
    """Two branches concatenated along channels, then a consumer conv: a concatenation coupling."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 6, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(10)
        self.c = nn.Conv2d(10, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(torch.cat([self.a(x), self.b(x)], dim=1)))
        return self.fc(self.pool(torch.relu(self.c(y))).flatten(1))


def test_resnet20_groups_follow_residual_couplings(resnet20: nn.Module) -> None:
    groups = {g.name: g for g in channel_groups(resnet20, X8)}
    assert len(groups) == 12  # 3 residual streams + 9 inner block convs
    stem = groups["conv1"]
    assert stem.size == 16
    assert set(stem.producers) == {"conv1", "layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2"}
    assert set(stem.norms) == {"bn1", "layer1.0.bn2", "layer1.1.bn2", "layer1.2.bn2"}
    assert {"layer2.0.conv1", "layer2.0.shortcut.0"} <= set(stem.consumers)
    # the classifier's outputs are never a group; its inputs shrink with the last residual stream
    assert all("fc" not in g.producers for g in groups.values())
    assert any("fc" in g.consumers for g in groups.values())
    assert all(0 < g.macs_share <= 1 for g in groups.values())


def test_a_group_name_not_in_the_graph_is_one_pruning_error(resnet20: nn.Module) -> None:
    graph = channel_graph(resnet20, X8)
    assert len(list(graph.pruning_group("conv1", [0, 3]))) > 1  # the stem's group reaches every coupled layer
    with pytest.raises(PruningError, match="'layer1.1.conv2' is not in this model's channel graph"):
        graph.pruning_group("layer1.1.conv2", [0, 3])  # a producer of that group, not its name


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.75])
def test_slimmed_resnet20_equals_masked_twin(resnet20: nn.Module, fraction: float) -> None:
    graph = channel_graph(resnet20, X8)
    keep = keep_from_fraction(graph.groups, fraction)
    slim = prune_channels(resnet20, X8, keep).eval()
    twin = mask_channels(resnet20, X8, keep).eval()
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        out_slim, out_twin, out_dense = slim(x), twin(x), resnet20(x)
    torch.testing.assert_close(out_slim, out_twin, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(out_slim, out_dense, atol=1e-3)  # something was really removed
    # the twin keeps every shape; the slimmed model is smaller
    assert all(a.shape == b.shape for a, b in zip(twin.parameters(), resnet20.parameters(), strict=True))
    assert sum(p.numel() for p in slim.parameters()) < sum(p.numel() for p in resnet20.parameters())


def test_conv_only_mask_is_not_equivalent(resnet20: nn.Module) -> None:
    """Control: zeroing only the producers' filters leaks BatchNorm's shifted beta into the next layer."""
    graph = channel_graph(resnet20, X8)
    keep = keep_from_fraction(graph.groups, 0.5)
    plan = graph.removed(keep)
    naive = copy.deepcopy(resnet20)
    modules = dict(naive.named_modules())
    with torch.no_grad():
        for group in graph.groups:
            for name in group.producers:
                modules[name].weight[plan[group.name]] = 0
    slim = prune_channels(resnet20, X8, keep).eval()
    with torch.no_grad():
        assert not torch.allclose(slim(X8), naive(X8), atol=1e-3)


def test_random_plans_slim_equals_masked_and_costs_are_exact(resnet20: nn.Module) -> None:
    graph = channel_graph(resnet20, X8)
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        keep = {g.name: int(torch.randint(1, g.size + 1, (1,), generator=gen)) for g in graph.groups}
        slim = prune_channels(resnet20, X8, keep).eval()
        twin = mask_channels(resnet20, X8, keep).eval()
        with torch.no_grad():
            torch.testing.assert_close(slim(X8), twin(X8), rtol=1e-4, atol=1e-5)
        cost = measure_model(slim, X8)
        assert cost.macs == graph.macs(keep)
        assert cost.params == graph.params(keep) == sum(p.numel() for p in slim.parameters())


def test_coupled_layers_have_equal_channels_after_slimming(resnet20: nn.Module) -> None:
    graph = channel_graph(resnet20, X8)
    keep = {g.name: max(1, g.size // 3) for g in graph.groups}
    keep["conv1"] = 5
    slim = prune_channels(resnet20, X8, keep).eval()
    for stage in (slim.layer1, slim.layer2, slim.layer3):
        widths = set()
        for block in stage:
            widths.add(block.conv2.out_channels)
            widths.add(block.bn2.num_features)
            if isinstance(block.shortcut, nn.Sequential):
                widths.add(block.shortcut[0].out_channels)
            assert block.conv1.out_channels == block.bn1.num_features == block.conv2.in_channels
        assert len(widths) == 1  # every branch of the residual additions agrees
    assert slim.conv1.out_channels == slim.bn1.num_features == slim.layer1[0].conv2.out_channels == 5
    assert slim.fc.in_features == slim.layer3[0].conv2.out_channels
    assert slim.fc.out_features == 10
    with torch.no_grad():
        assert slim(torch.randn(3, 1, 8, 8)).shape == (3, 10)


def test_original_model_untouched(resnet20: nn.Module) -> None:
    resnet20.train()
    before = copy.deepcopy(resnet20.state_dict())
    graph = channel_graph(resnet20, X8)
    prune_channels(resnet20, X8, keep_from_fraction(graph.groups, 0.5))
    mask_channels(resnet20, X8, keep_from_fraction(graph.groups, 0.5))
    after = resnet20.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats too
    assert resnet20.training


def test_lenet5_flatten_into_linear() -> None:
    torch.manual_seed(0)
    model = build_model("lenet-5", input_shape=(1, 28, 28), num_classes=10).eval()
    x = torch.randn(2, 1, 28, 28)
    graph = channel_graph(model, x)
    assert {g.name for g in graph.groups} == {"conv1", "conv2", "fc1"}  # fc2 is the classifier
    keep = {"conv1": 7, "conv2": 20, "fc1": 100}
    slim = prune_channels(model, x, keep).eval()
    assert slim.fc1.in_features == 20 * 4 * 4 and slim.fc2.out_features == 10
    with torch.no_grad():
        torch.testing.assert_close(slim(x), mask_channels(model, x, keep)(x), rtol=1e-4, atol=1e-5)
    cost = measure_model(slim, x)
    assert cost.macs == graph.macs(keep) and cost.params == graph.params(keep)


def test_concatenation_and_depthwise_groups() -> None:
    torch.manual_seed(0)
    net = randomise_batchnorm(CatNet())
    x = torch.randn(2, 3, 6, 6)
    graph = channel_graph(net, x)
    names = {g.name for g in graph.groups}
    assert {"a", "b", "c"} <= names
    keep = {"a": 2, "b": 3, "c": 5}
    slim = prune_channels(net, x, keep).eval()
    assert slim.bn.num_features == 5 and slim.c.in_channels == 5
    with torch.no_grad():
        torch.testing.assert_close(slim(x), mask_channels(net, x, keep)(x), rtol=1e-4, atol=1e-5)
    assert measure_model(slim, x).macs == graph.macs(keep)

    import torchvision

    mobile = randomise_batchnorm(torchvision.models.mobilenet_v2(num_classes=4, width_mult=0.35))
    xm = torch.randn(1, 3, 32, 32)
    mgraph = channel_graph(mobile, xm)
    dw = [n for n, layer in mgraph.layers.items() if layer.depthwise]
    assert dw, "the depthwise convs must be recognised"
    keep = keep_from_fraction(mgraph.groups, 0.5)
    slim = prune_channels(mobile, xm, keep).eval()
    with torch.no_grad():
        torch.testing.assert_close(slim(xm), mask_channels(mobile, xm, keep)(xm), rtol=1e-3, atol=1e-4)
    cost = measure_model(slim, xm)
    assert cost.macs == mgraph.macs(keep) and cost.params == mgraph.params(keep)
    for name in dw:  # a depthwise conv keeps groups == in == out channels
        conv = dict(slim.named_modules())[name]
        assert conv.groups == conv.in_channels == conv.out_channels


def test_scores(resnet20: nn.Module) -> None:
    graph = channel_graph(resnet20, X8)
    group = graph.group("layer1.0.conv1")
    w = resnet20.layer1[0].conv1.weight.detach().reshape(16, -1)
    torch.testing.assert_close(channel_scores(group), w.abs().sum(1))
    torch.testing.assert_close(channel_scores(group, "l2"), w.norm(dim=1))
    torch.testing.assert_close(channel_scores(group, "bn"), resnet20.layer1[0].bn1.weight.detach().abs())
    stem = graph.group("conv1")  # residual stream: every producer counts
    expected = sum(
        m.weight.detach().reshape(16, -1).abs().sum(1)
        for m in (resnet20.conv1, *(b.conv2 for b in resnet20.layer1))
    )
    torch.testing.assert_close(channel_scores(stem), expected)
    # the lowest-scoring channels are the ones removed
    plan = graph.removed({"layer1.0.conv1": 12})
    assert plan["layer1.0.conv1"] == sorted(torch.argsort(w.abs().sum(1))[:4].tolist())


def test_ignored_layers(resnet20: nn.Module) -> None:
    names = {g.name for g in channel_groups(resnet20, X8, ignored_layers=["layer3.*"])}
    assert not any(n.startswith("layer3") for n in names)
    # an ignored layer keeps its whole weight tensor: stage 3's stream (rooted at its shortcut) is gone, and so
    # is stage 2's stream, whose channels are stage 3's input channels; stage 1's stream and stage 2's inner convs stay
    assert "layer2.0.shortcut.0" not in names and {"conv1", "layer2.0.conv1", "layer1.0.conv1"} <= names
    with pytest.raises(PruningError, match="matches no module"):
        channel_groups(resnet20, X8, ignored_layers=["nope.*"])


@pytest.mark.parametrize(
    ("keep", "message"),
    [
        ({"conv1": 0}, r"channel group 'conv1' would keep 0 of 16 channels, leaving the layer with no channels"),
        ({"conv1": 17}, r"has 16 channels, cannot keep 17"),
        ({"conv1": 2.5}, r"keep count must be an integer"),
        ({"nope": 3}, r"unknown channel group 'nope'; allowed: conv1, "),
    ],
)
def test_bad_keep_plans(resnet20: nn.Module, keep: dict, message: str) -> None:
    with pytest.raises(PruningError, match=message) as info:
        prune_channels(resnet20, X8, keep)
    assert "\n" not in str(info.value)
    with pytest.raises(PruningError, match=message):
        mask_channels(resnet20, X8, keep)


@pytest.mark.parametrize("fraction", [1.0, -0.1, 1.5, float("nan"), True])
def test_bad_fractions(resnet20: nn.Module, fraction: float) -> None:
    groups = channel_groups(resnet20, X8)
    with pytest.raises(PruningError, match=r"must be a number in \[0, 1\)"):
        keep_from_fraction(groups, fraction)


def test_bad_norms() -> None:
    model = build_model("lenet-5", input_shape=(1, 28, 28), num_classes=10)
    x = torch.randn(1, 1, 28, 28)
    graph = channel_graph(model, x)
    with pytest.raises(PruningError, match="has no affine BatchNorm, so norm 'bn' cannot score it"):
        graph.scores("conv1", "bn")
    with pytest.raises(PruningError, match="unknown channel norm 'l3'; allowed: l1, l2, bn"):
        prune_channels(model, x, {"conv1": 3}, norm="l3")
