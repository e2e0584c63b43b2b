"""Sparsity and FLOPs metrics: hand-computed MACs, sparse FLOPs by density, compression, speedup, collapse."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from purl.pruning import MaskState, profile_model, pruning_stats


def conv_linear_net() -> nn.Module:
    """Conv2d(3, 8, 3, stride 2, padding 1) -> ReLU -> Flatten -> Linear(8*8*8, 10), for 3x16x16 inputs."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(512, 10))


# Hand computation for conv_linear_net on one 3x16x16 sample:
#   conv: output 8 x 8 x 8 (floor((16 + 2*1 - 3) / 2) + 1 = 8 per side); weights 8*3*3*3 = 216, each used at
#         8*8 = 64 output positions -> 216 * 64 = 13,824 MACs
#   fc:   512 inputs x 10 outputs -> 5,120 MACs
CONV_WEIGHTS, CONV_MACS = 216, 13_824
FC_WEIGHTS, FC_MACS = 5_120, 5_120
TOTAL_MACS = CONV_MACS + FC_MACS  # 18,944
PROFILES = profile_model(conv_linear_net(), (3, 16, 16))


def test_flops_of_known_net_match_hand_computation():
    profiles = profile_model(conv_linear_net(), (3, 16, 16))
    assert list(profiles) == ["0", "3"]
    conv, fc = profiles["0"], profiles["3"]
    assert (conv.kind, conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.groups) == (
        "conv2d", 3, 8, 9, 2, 1)
    assert (conv.numel, conv.macs) == (CONV_WEIGHTS, CONV_MACS)
    assert (fc.kind, fc.in_channels, fc.out_channels, fc.kernel_size, fc.stride) == ("linear", 512, 10, 1, 1)
    assert (fc.numel, fc.macs) == (FC_WEIGHTS, FC_MACS)
    stats = pruning_stats(profiles, {"0": 0, "3": 0})
    assert stats.dense_flops == stats.sparse_flops == TOTAL_MACS == 18_944
    assert stats.theoretical_speedup == 1.0 and stats.compression_ratio == 1.0


def test_sparse_flops_scale_by_layer_density():
    profiles = profile_model(conv_linear_net(), (3, 16, 16))
    # Half the conv weights and 90% of the fc weights pruned.
    stats = pruning_stats(profiles, {"0": 108, "3": 4_608})
    assert stats.dense_flops == TOTAL_MACS
    assert stats.sparse_flops == CONV_MACS // 2 + FC_MACS // 10 == 6_912 + 512
    assert stats.theoretical_speedup == pytest.approx(18_944 / 7_424)
    total = CONV_WEIGHTS + FC_WEIGHTS
    assert stats.total_params == total and stats.nonzero_params == total - 108 - 4_608
    assert stats.compression_ratio == pytest.approx(total / (total - 4_716))
    assert stats.global_sparsity == pytest.approx(4_716 / total)
    assert stats.layer_sparsity == {"0": 0.5, "3": 0.9}
    assert stats.collapsed_layers == []


def test_collapsed_layer_detection_and_infinite_ratios():
    profiles = profile_model(conv_linear_net(), (3, 16, 16))
    stats = pruning_stats(profiles, {"0": 215, "3": FC_WEIGHTS})
    assert stats.collapsed_layers == ["3"]
    assert stats.sparse_flops == round(CONV_MACS / 216)  # one conv weight left, used at 64 positions
    everything = pruning_stats(profiles, {"0": CONV_WEIGHTS, "3": FC_WEIGHTS})
    assert everything.collapsed_layers == ["0", "3"]
    assert everything.nonzero_params == 0 and everything.sparse_flops == 0
    assert math.isinf(everything.compression_ratio) and math.isinf(everything.theoretical_speedup)
    assert everything.global_sparsity == 1.0


def test_layers_not_counted_as_prunable_stay_dense_in_flops():
    profiles = profile_model(conv_linear_net(), (3, 16, 16))
    stats = pruning_stats(profiles, {"3": FC_WEIGHTS // 2})  # only the fc is prunable
    assert stats.total_params == FC_WEIGHTS and stats.global_sparsity == 0.5
    assert stats.dense_flops == TOTAL_MACS
    assert stats.sparse_flops == CONV_MACS + FC_MACS // 2
    assert set(stats.layer_sparsity) == {"3"}
    assert stats.as_dict()["sparse_flops"] == stats.sparse_flops


def test_grouped_and_depthwise_convs():
    # Depthwise Conv2d(8, 8, 3, groups=8, padding 1) on 8x5x5: 8*1*9 = 72 weights x 25 positions = 1,800 MACs.
    # Grouped Conv2d(8, 4, 1, groups=2) on 8x5x5: 4*4*1 = 16 weights x 25 positions = 400 MACs.
    model = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 4, 1, groups=2))
    profiles = profile_model(model, (8, 5, 5))
    assert (profiles["0"].groups, profiles["0"].numel, profiles["0"].macs) == (8, 72, 1_800)
    assert (profiles["1"].groups, profiles["1"].numel, profiles["1"].macs) == (2, 16, 400)


def test_conv1d_and_conv3d_profiles():
    # Conv1d(2, 4, 3) on 2x10: output length 8; 4*2*3 = 24 weights x 8 = 192 MACs.
    # Conv3d(4, 2, 3, padding 1, stride 2) on 4x6x6x6: output 2x3x3x3 (27 positions); 2*4*27 = 216 weights
    #   x 27 = 5,832 MACs.
    # Linear(2*3*3*3 = 54, 5): 270 MACs.
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv1d(2, 4, 3)
            self.c3 = nn.Conv3d(4, 2, 3, stride=2, padding=1)
            self.fc = nn.Linear(54, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.c3(x).flatten(1))

    one_d = profile_model(nn.Conv1d(2, 4, 3), (2, 10))[""]
    assert (one_d.kind, one_d.kernel_size, one_d.stride, one_d.numel, one_d.macs) == ("conv1d", 3, 1, 24, 192)
    profiles = profile_model(Net(), (4, 6, 6, 6))
    assert list(profiles) == ["c3", "fc", "c1"]  # called layers in call order, then the unreached ones
    assert (profiles["c1"].kind, profiles["c1"].numel, profiles["c1"].macs) == ("conv1d", 24, 0)
    c3 = profiles["c3"]
    assert (c3.kind, c3.kernel_size, c3.stride, c3.numel, c3.macs) == ("conv3d", 27, 2, 216, 5_832)
    assert profiles["fc"].macs == 270


def test_linear_on_sequences_counts_every_position():
    # Linear(6, 3) applied to 4 tokens: 18 weights x 4 positions = 72 MACs.
    assert profile_model(nn.Linear(6, 3), (4, 6))[""].macs == 72


def test_profile_model_restores_mode_and_leaves_batchnorm_statistics_alone():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    profile_model(model, (1, 6, 6))
    assert model.training
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    model.eval()
    profile_model(model, (1, 6, 6))
    assert not model.training
    assert not any(m._forward_hooks for m in model.modules())


def test_layers_the_forward_pass_does_not_reach_cost_nothing_but_are_profiled():
    """Like GoogLeNet's auxiliary heads (train-mode only): prunable, so stats must not crash on them."""

    class WithAux(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Linear(4, 4)
            self.aux = nn.Linear(4, 2)
            self.head = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.body(x)
            return self.head(h) + self.aux(h) if self.training else self.head(h)

    model = WithAux()
    profiles = profile_model(model, (4,))
    assert {name: p.macs for name, p in profiles.items()} == {"body": 16, "head": 8, "aux": 0}
    masks = MaskState(model)
    masks.prune_layers({"aux": 1.0, "body": 0.5})
    stats = pruning_stats(profiles, masks.pruned())
    assert stats.total_params == 16 + 8 + 8 and stats.nonzero_params == 8 + 8
    assert stats.dense_flops == 24 and stats.sparse_flops == 8 + 8
    assert stats.collapsed_layers == ["aux"]


def test_shared_module_is_profiled_once():
    shared = nn.Linear(4, 4)
    profiles = profile_model(nn.Sequential(shared, nn.ReLU(), shared), (4,))
    assert list(profiles) == ["0"] and profiles["0"].macs == 16


def test_stats_from_a_real_mask_state():
    model = conv_linear_net()
    profiles = profile_model(model, (3, 16, 16))
    masks = MaskState(model)
    masks.prune_layers({"0": 0.25, "3": 0.75})
    stats = pruning_stats(profiles, masks.pruned())
    assert masks.pruned() == {"0": 54, "3": 3_840}
    assert stats.layer_sparsity == masks.sparsities()
    assert stats.global_sparsity == pytest.approx(masks.global_sparsity())
    assert stats.nonzero_params == int(sum((layer.weight != 0).sum() for layer in masks.layers))
    assert stats.sparse_flops == round(CONV_MACS * 0.75 + FC_MACS * 0.25)


@given(conv_pruned=st.integers(0, CONV_WEIGHTS), fc_pruned=st.integers(0, FC_WEIGHTS))
def test_sparse_flops_and_ratios_are_consistent(conv_pruned, fc_pruned):
    stats = pruning_stats(PROFILES, {"0": conv_pruned, "3": fc_pruned})
    expected = CONV_MACS * (1 - conv_pruned / CONV_WEIGHTS) + FC_MACS * (1 - fc_pruned / FC_WEIGHTS)
    assert stats.sparse_flops == round(expected)
    assert 0 <= stats.sparse_flops <= stats.dense_flops == TOTAL_MACS
    nonzero = CONV_WEIGHTS + FC_WEIGHTS - conv_pruned - fc_pruned
    assert stats.nonzero_params == nonzero
    if nonzero:
        assert stats.compression_ratio == pytest.approx((CONV_WEIGHTS + FC_WEIGHTS) / nonzero)
    if stats.sparse_flops:
        assert stats.theoretical_speedup == pytest.approx(TOTAL_MACS / stats.sparse_flops)
        assert stats.theoretical_speedup >= 1.0
    assert stats.collapsed_layers == [n for n, p, t in (("0", conv_pruned, CONV_WEIGHTS), ("3", fc_pruned, FC_WEIGHTS))
                                      if p == t]

