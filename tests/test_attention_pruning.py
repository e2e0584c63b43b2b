"""Attention projections are prunable: ``nn.MultiheadAttention``'s raw ``in_proj_weight`` (or
``q/k/v_proj_weight``) and its ``out_proj``, so Global MP reaches the requested sparsity over *all*
weight matrices of a transformer (before, only Conv/Linear modules were found and a ViT at 90 %
kept every attention input projection dense), the masks change the forward pass (also PyTorch's
fused inference fast path), and the FLOPs profile counts the attention projections.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

from purl.baselines.global_mp import global_magnitude_prune
from purl.pruning.layers import find_prunable_layers, uncovered_weights
from purl.pruning.masks import MaskState
from purl.pruning.metrics import profile_model, pruning_stats

EMBEDDINGS = ("class_token", "encoder.pos_embedding")  # ViT parameters that are not weight matrices


class AttnNet(nn.Module):
    """(N, 6, 8) tokens -> self-attention -> mean over tokens -> Linear head (4 classes)."""

    def __init__(self, kdim: int | None = None) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 16)
        self.kv = nn.Linear(8, kdim) if kdim else None
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True, kdim=kdim, vdim=kdim)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.embed(x)
        kv = self.kv(x) if self.kv is not None else q
        out, _ = self.attn(q, kv, kv, need_weights=False)
        return self.head(out.mean(1))


def tiny_vit() -> nn.Module:
    """A 2-block torchvision ViT for 3x16x16 inputs (4 patches + class token), weights ~ N(0, 0.5)
    (torchvision zero-initialises the head, which would hide every change of the output)."""
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(image_size=16, patch_size=8, num_layers=2, num_heads=2,
                                                 hidden_dim=16, mlp_dim=32, num_classes=4)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.5)
    return model


def weight_matrices(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.dim() >= 2 and n not in EMBEDDINGS}


def test_discovery_names_attention_projections() -> None:
    names = [layer.name for layer in find_prunable_layers(AttnNet())]
    assert names == ["embed", "attn.in_proj_weight", "attn.out_proj", "head"]
    assert uncovered_weights(AttnNet()) == []
    layer = find_prunable_layers(AttnNet(), include=["*.in_proj_weight"])[0]
    assert layer.kind == "linear" and layer.weight is layer.module.in_proj_weight


def test_separate_qkv_projections_when_kdim_differs() -> None:
    model = AttnNet(kdim=12)
    names = [layer.name for layer in find_prunable_layers(model)]
    assert names == ["embed", "kv", "attn.q_proj_weight", "attn.k_proj_weight", "attn.v_proj_weight",
                     "attn.out_proj", "head"]
    assert uncovered_weights(model) == []
    profiles = profile_model(model, (6, 8))
    assert profiles["attn.q_proj_weight"].macs == 16 * 16 * 6
    assert profiles["attn.k_proj_weight"].macs == 16 * 12 * 6
    assert profiles["attn.out_proj"].macs == 16 * 16 * 6


def test_vit_global_mp_reaches_sparsity_over_all_weight_matrices() -> None:
    model = tiny_vit().eval()
    masks = MaskState(model)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        dense_out = model(x)
    global_magnitude_prune(model, 0.9, masks=masks)
    mats = weight_matrices(model)
    zeros = sum(int((p == 0).sum()) for p in mats.values())
    total = sum(p.numel() for p in mats.values())
    assert zeros == round(0.9 * total)
    in_proj = [n for n in mats if n.endswith("in_proj_weight")]
    assert len(in_proj) == 2 and all(int((mats[n] == 0).sum()) > 0 for n in in_proj)
    assert uncovered_weights(model) == list(EMBEDDINGS)
    with torch.no_grad():
        assert not torch.allclose(model(x), dense_out)
    masks.restore()
    with torch.no_grad():
        assert torch.equal(model(x), dense_out)


@pytest.mark.parametrize("grad", [False, True], ids=["fast-path", "autograd"])
def test_in_proj_mask_changes_the_forward(grad: bool) -> None:
    """Pruning only the attention input projections changes the output, in PyTorch's fused inference
    path too (eval + no_grad on ``nn.TransformerEncoder``), which reads ``in_proj_weight`` directly."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    x = torch.randn(2, 5, 16)
    masks = MaskState(model, find_prunable_layers(model, include=["*.in_proj_weight"]))
    assert len(masks.layers) == 2
    with torch.set_grad_enabled(grad):
        dense_out = model(x).detach()
        for name in masks.names:
            masks.prune_layer(name, 1.0)  # an all-zero in_proj: q = k = v = bias only
        pruned_out = model(x).detach()
        expected = copy.deepcopy(model)
        for mod in expected.modules():
            if isinstance(mod, nn.MultiheadAttention):
                mod.in_proj_weight.data.zero_()
        assert torch.allclose(pruned_out, expected(x).detach())
    assert not torch.allclose(pruned_out, dense_out)


def test_attached_masks_keep_in_proj_pruned_through_training() -> None:
    torch.manual_seed(0)
    model = AttnNet()
    masks = MaskState(model)
    global_magnitude_prune(model, 0.8, masks=masks)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    masks.attach(opt)
    pruned = ~masks.masks["attn.in_proj_weight"]
    assert pruned.any()
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(torch.randn(8, 6, 8)), torch.randint(0, 4, (8,))).backward()
        assert (model.attn.in_proj_weight.grad[pruned] == 0).all()
        opt.step()
    assert (model.attn.in_proj_weight[pruned] == 0).all()
    masks.detach()


def test_profile_counts_attention_macs_and_stats_work() -> None:
    model = tiny_vit()
    profiles = profile_model(model, (3, 16, 16))
    tokens = (16 // 8) ** 2 + 1  # patches + class token
    prefix = "encoder.layers.encoder_layer_0.self_attention."
    assert profiles[prefix + "in_proj_weight"].macs == 3 * 16 * 16 * tokens
    assert profiles[prefix + "in_proj_weight"].kind == "linear"
    assert profiles[prefix + "out_proj"].macs == 16 * 16 * tokens  # called functionally, still counted
    layers = find_prunable_layers(model)
    assert set(profiles) == {layer.name for layer in layers}
    per_token = sum(layer.numel for layer in layers if layer.name.startswith("encoder."))
    assert sum(p.macs for p in profiles.values()) == per_token * tokens + 16 * 3 * 64 * 4 + 16 * 4
    masks = MaskState(model, layers)
    global_magnitude_prune(model, 0.5, masks=masks)
    stats = pruning_stats(profiles, masks.pruned())
    assert stats.global_sparsity == pytest.approx(0.5, abs=1e-3)
    assert stats.dense_flops == sum(p.macs for p in profiles.values())
    assert 0 < stats.sparse_flops < stats.dense_flops


def test_transformer_encoder_fast_path_layers_are_profiled() -> None:
    """``nn.TransformerEncoderLayer``'s fused inference path skips its submodules' hooks; the profile
    pass must still see every projection and feed-forward layer."""
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, batch_first=True)
    model = nn.Sequential(nn.TransformerEncoder(layer, 1, enable_nested_tensor=False))
    profiles = profile_model(model, (5, 16))
    assert all(p.macs > 0 for p in profiles.values()), profiles
    assert profiles["0.layers.0.linear1"].macs == 16 * 32 * 5


def digits_attn(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """A user model for 1x8x8 digits: the 8 image rows as 8 tokens -> self-attention -> head."""

    class DigitsAttn(AttnNet):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(16, num_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x.view(x.shape[0], input_shape[1], input_shape[2]))

    return DigitsAttn()


def test_pruning_env_prunes_attention_projections(tmp_path) -> None:
    """The RL env walks the attention projections like any layer and lands on the target sparsity."""
    import numpy as np

    from purl.config import load_config
    from purl.envs import PruningEnv

    config = load_config("configs/quick.yaml", [f"cache_dir={tmp_path}", "device=cpu", "pretrain.epochs=1",
                                                f"model.name={__name__}:digits_attn", "model.kwargs={}"])
    env = PruningEnv(config, target_sparsity=0.8)
    assert env.layer_names == ["embed", "attn.in_proj_weight", "attn.out_proj", "head"]
    env.reset(seed=0)
    done, info = False, {}
    while not done:
        _, _, terminated, truncated, info = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
        done = terminated or truncated
    episode = info["purl_episode"]
    assert episode["global_sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert episode["layer_sparsities"]["attn.in_proj_weight"] > 0
    assert env.granularity.masks.masks["attn.in_proj_weight"].logical_not().any()
