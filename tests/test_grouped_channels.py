"""Channel pruning of grouped convolutions (ResNeXt, RegNet) and clean refusals of models it cannot slim.

A grouped convolution splits its channels into ``groups`` segments; each segment must lose the same channel
offsets (Torch-Pruning's rule), so a group feeding or fed by one keeps a multiple of ``groups`` channels.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.convnext import CNBlockConfig, ConvNeXt
from torchvision.models.resnet import Bottleneck, ResNet
from torchvision.models.vision_transformer import VisionTransformer

from purl.baselines.channel import ChannelConstraints, channel_tolerance, keep_for_ratio
from purl.errors import PruningError
from purl.pruning.channels import (
    channel_graph,
    check_slimmable,
    keep_from_fraction,
    mask_channels,
    measure_model,
    prune_channels,
)
from tests.batchnorm import randomise_batchnorm

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def tiny_resnext() -> nn.Module:
    """A two-block ResNeXt (groups=4, width 4 per group): torchvision's own Bottleneck with grouped 3x3 convs."""
    torch.manual_seed(0)
    return randomise_batchnorm(ResNet(Bottleneck, [1, 1, 1, 1], groups=4, width_per_group=4, num_classes=5))


@pytest.fixture(scope="module")
def resnext() -> nn.Module:
    return tiny_resnext()


def test_grouped_segments_are_detected(resnext: nn.Module) -> None:
    graph = channel_graph(resnext, X)
    inner = graph.group("layer1.0.conv1")  # conv1's outputs feed the grouped conv2
    assert inner.grouping == 4 and inner.grouped_layers == ("layer1.0.conv2",)
    assert graph.group("layer1.0.conv2").grouping == 4  # conv2's own outputs: 4 segments too
    assert graph.group("conv1").grouping == 1  # the stem's stream touches no grouped conv


def test_removal_takes_the_same_offsets_from_every_segment(resnext: nn.Module) -> None:
    graph = channel_graph(resnext, X)
    group = graph.group("layer1.0.conv1")
    segment = group.size // group.grouping
    order = graph.removal_order(group.name)
    for k in range(1, segment):
        removed = sorted(order[:k * group.grouping])
        offsets = [{c - s * segment for c in removed if s * segment <= c < (s + 1) * segment}
                   for s in range(group.grouping)]
        assert all(o == offsets[0] for o in offsets) and len(offsets[0]) == k


def test_keep_counts_must_fill_every_segment_alike(resnext: nn.Module) -> None:
    graph = channel_graph(resnext, X)
    group = graph.group("layer1.0.conv1")
    with pytest.raises(PruningError, match=r"multiple of 4 channels .* got 6; allowed: 4, 8, \.\.\., 16"):
        graph.check_keep({group.name: 6})
    plan = keep_from_fraction(graph.groups, 0.4)  # 16 channels x 0.4 = 6.4 -> 4 removed (a multiple of 4)
    assert plan[group.name] == 12
    assert ChannelConstraints().removals(group) == [4, 8, 12]
    assert ChannelConstraints(multiple=8).removals(group) == [8]


@pytest.mark.parametrize("method", ["global-mp", "uniform", "erk", "lamp"])
def test_grouped_model_slims_lands_and_equals_its_masked_twin(resnext: nn.Module, method: str) -> None:
    graph = channel_graph(resnext, X)
    keep = keep_for_ratio(graph, 0.5, method=method)
    assert all(keep[g.name] % g.grouping == 0 for g in graph.groups)
    slim = prune_channels(resnext, X, keep, graph=graph).eval()
    cost = measure_model(slim, X)
    assert cost.macs == graph.macs(keep) and cost.params == graph.params(keep)
    assert 0.5 * graph.dense_macs - channel_tolerance(graph) <= cost.macs <= 0.5 * graph.dense_macs
    conv2 = slim.layer1[0].conv2
    assert conv2.groups == 4 and conv2.in_channels % 4 == 0 and conv2.out_channels % 4 == 0
    with torch.no_grad():
        torch.testing.assert_close(slim(X), mask_channels(resnext, X, keep)(X), rtol=1e-4, atol=1e-5)


def test_torchvision_regnet_with_squeeze_excitation() -> None:
    torch.manual_seed(0)
    regnet = randomise_batchnorm(torchvision.models.regnet_y_400mf(num_classes=4))
    graph = channel_graph(regnet, X[:1])
    assert any(g.grouping > 1 for g in graph.groups)
    keep = keep_for_ratio(graph, 0.5, method="global-mp")
    slim = prune_channels(regnet, X[:1], keep, graph=graph).eval()
    assert measure_model(slim, X[:1]).macs == graph.macs(keep)
    with torch.no_grad():
        torch.testing.assert_close(slim(X[:1]), mask_channels(regnet, X[:1], keep)(X[:1]), rtol=1e-3, atol=1e-4)
    check_slimmable(graph, masked_twin=True)  # the channel env would accept it


def test_a_model_that_hard_codes_its_width_is_refused_naming_the_group() -> None:
    torch.manual_seed(0)
    vit = VisionTransformer(image_size=16, patch_size=8, num_layers=1, num_heads=2, hidden_dim=8, mlp_dim=16,
                            num_classes=3).eval()
    x = torch.randn(1, 3, 16, 16)
    graph = channel_graph(vit, x)
    keep = keep_from_fraction(graph.groups, 0.5)
    with pytest.raises(PruningError, match=r"channel group '.+' cannot be slimmed: the model no longer runs .*"
                                           r"model.exclude") as info:
        prune_channels(vit, x, keep, graph=graph)
    assert "\n" not in str(info.value)
    with pytest.raises(PruningError, match="cannot be slimmed"):
        check_slimmable(graph)


def test_layer_norm_models_slim_but_have_no_exact_masked_twin() -> None:
    torch.manual_seed(0)
    convnext = ConvNeXt([CNBlockConfig(8, 16, 1), CNBlockConfig(16, None, 1)], num_classes=3).eval()
    graph = channel_graph(convnext, X[:1])
    keep = keep_for_ratio(graph, 0.5, method="uniform")
    slim = prune_channels(convnext, X[:1], keep, graph=graph)
    cost = measure_model(slim, X[:1])  # the layer scales (raw parameters) are counted in the plan too
    assert cost.macs == graph.macs(keep) and cost.params == graph.params(keep)
    with pytest.raises(PruningError, match="LayerNorm2d .* only slimming"):
        check_slimmable(graph, masked_twin=True)
    check_slimmable(graph)  # slimming alone is fine


def test_channel_env_on_a_grouped_model_keeps_segments_equal_and_lands(tmp_path) -> None:
    import numpy as np

    from purl.config import load_config
    from purl.envs import PruningEnv
    from purl.task import build_task

    config = load_config("configs/mnist5k-resnet20.yaml", [
        f"cache_dir={tmp_path}", "model.name=torchvision:regnet_x_400mf", "data.max_samples=300",
        "pretrain.max_steps=2", "data.eval_batch_size=256", "env.val_samples=32", "prune.granularity=channel",
        "env.action=prior-relative", "prune.budget_metric=flops", "env.target_sparsity=0.5",
        "env.bn_recalibration_batches=0", "device=cpu"])
    env = PruningEnv(config, task=build_task(config, torch.device("cpu"), progress=False))
    assert any(g.grouping > 1 for g in env.granularity.groups)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    done = False
    while not done:
        _, _, done, _, info = env.step(rng.uniform(-1, 1, 1).astype(np.float32))
    keep = info["purl_episode"]["channel_keep"]
    assert all(keep[g.name] % g.grouping == 0 for g in env.granularity.groups)
    x = torch.randn(2, *config_shape(env), generator=torch.Generator().manual_seed(0))
    slim = prune_channels(env.task.model, x[:1], keep).eval()
    cost = measure_model(slim, x[:1])
    assert cost.macs <= 0.5 * env.granularity.graph.dense_macs + 1e-9
    with torch.no_grad():  # the env's masked model computes what the slimmed one does
        torch.testing.assert_close(slim(x), env.model.eval()(x), rtol=1e-3, atol=1e-4)


def config_shape(env) -> tuple[int, ...]:
    return tuple(env.task.data.input_shape)
