"""Magnitude masks: exact counts, deterministic ties, persistence through optimisers, bit-exact restore."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from purl.errors import PruningError
from purl.pruning import MaskState, find_prunable_layers, magnitude_mask, pruned_count

# ------------------------------------------------------------------------------------------ helpers

KINDS = ("normal", "all-equal", "all-zero", "integer", "few-values")
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def make_weight(shape: tuple[int, ...], kind: str, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Weights of ``shape``; all kinds but 'normal' have heavy ties in |w| (incl. +x / -x pairs)."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "normal":
        w = torch.randn(shape, generator=gen)
    elif kind == "all-equal":
        w = torch.full(shape, 0.5)
    elif kind == "all-zero":
        w = torch.zeros(shape)
    elif kind == "integer":
        w = torch.randint(-3, 4, shape, generator=gen).float()
    else:  # few-values: two magnitudes, random signs
        w = torch.randint(1, 3, shape, generator=gen).float() * (torch.randint(0, 2, shape, generator=gen) * 2 - 1)
    return w.to(dtype)


def oracle_mask(weight: torch.Tensor, k: int) -> torch.Tensor:
    """Keep-mask pruning the k smallest |w|, ties by lower flat index first (stable sort), computed independently."""
    flat = weight.detach().cpu().double().abs().flatten()
    order = torch.sort(flat, stable=True).indices
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    keep[order[:k]] = False
    return keep.view(weight.shape)


def pruned_weights_are_zero(masks: MaskState) -> bool:
    return all(bool((layer.weight[~masks.masks[layer.name]] == 0).all()) for layer in masks.layers)


class Net(nn.Module):
    """Small CNN with BatchNorm (running stats), a depthwise and a 1x1 conv, and a Linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.pw = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8 * 4 * 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        x = torch.relu(self.pw(self.dw(x)))
        return self.fc(nn.functional.avg_pool2d(x, 2).flatten(1))


def batches(device: torch.device, n: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 3, 8, 8, generator=gen).to(device), torch.randint(0, 4, (16,), generator=gen).to(device))
            for _ in range(n)]


def sgd_step(model: nn.Module, opt: torch.optim.Optimizer, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    opt.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(batch[0]), batch[1]).backward()
    opt.step()


# ------------------------------------------------------------------------------- exact counts

shapes = st.lists(st.integers(1, 7), min_size=1, max_size=4).map(tuple)


@given(shape=shapes, sparsity=st.floats(0.0, 1.0), kind=st.sampled_from(KINDS), seed=st.integers(0, 2**16),
       dtype=st.sampled_from(DTYPES))
def test_exact_count_and_k_smallest_with_ties_by_index(shape, sparsity, kind, seed, dtype):
    weight = make_weight(shape, kind, seed, dtype)
    n = weight.numel()
    k = pruned_count(sparsity, n)
    assert k == round(sparsity * n)
    mask = magnitude_mask(weight, k)
    assert mask.dtype == torch.bool and mask.shape == weight.shape
    assert int((~mask).sum()) == k
    # The pruned ones are exactly the k smallest |w|, lower index first among equal magnitudes.
    assert torch.equal(mask, oracle_mask(weight, k))
    # Deterministic: same result on a second call and on a copy.
    assert torch.equal(mask, magnitude_mask(weight.clone(), k))


@given(shape=shapes, sparsity=st.floats(0.0, 1.0), kind=st.sampled_from(KINDS), seed=st.integers(0, 2**16))
def test_mask_state_prunes_exactly_k_and_zeroes_only_them(shape, sparsity, kind, seed):
    layer = nn.Linear(1, 1, bias=False)
    layer.weight = nn.Parameter(make_weight(shape, kind, seed))
    original = layer.weight.detach().clone()
    masks = MaskState(nn.Sequential(layer))
    mask = masks.prune_layer("0", sparsity)
    assert masks.pruned() == {"0": round(sparsity * original.numel())}
    assert masks.sparsities()["0"] == pytest.approx(round(sparsity * original.numel()) / original.numel())
    assert torch.equal(mask, oracle_mask(original, round(sparsity * original.numel())))
    assert torch.equal(layer.weight.detach(), original * mask)


def test_ties_lower_index_pruned_first_explicit():
    weight = torch.tensor([3.0, -1.0, 1.0, 2.0, -1.0, 1.0, 0.5])
    # |w| sorted: 0.5 (6), then 1.0 at 1, 2, 4, 5 in index order, then 2.0, 3.0
    assert magnitude_mask(weight, 1).tolist() == [True, True, True, True, True, True, False]
    assert magnitude_mask(weight, 3).tolist() == [True, False, False, True, True, True, False]
    assert magnitude_mask(weight, 4).tolist() == [True, False, False, True, False, True, False]
    assert magnitude_mask(torch.ones(2, 3), 4).flatten().tolist() == [False] * 4 + [True] * 2


@pytest.mark.parametrize("numel", [1, 3, 10, 97, 1000])
def test_every_sparsity_grid_point_exact(numel):
    weight = make_weight((numel,), "integer", seed=numel)
    for sparsity in [i / 40 for i in range(41)]:
        k = round(sparsity * numel)
        assert int((~magnitude_mask(weight, k)).sum()) == k


def test_exact_counts_on_device(device):
    for kind in KINDS:
        weight = make_weight((6, 5, 3), kind, seed=1).to(device)
        for k in (0, 1, 7, 45, 89, 90):
            mask = magnitude_mask(weight, k)
            assert mask.device.type == device.type
            assert torch.equal(mask.cpu(), oracle_mask(weight, k))


# ------------------------------------------------------------------------------- validation


@pytest.mark.parametrize("sparsity", [1.5, -0.1, 1.0000001, -1e-9, math.nan, math.inf, -math.inf])
def test_sparsity_outside_unit_interval_raises(sparsity):
    with pytest.raises(PruningError, match=r"\[0, 1\]"):
        pruned_count(sparsity, 100)
    masks = MaskState(nn.Sequential(nn.Linear(4, 4)))
    with pytest.raises(PruningError, match=r"\[0, 1\]"):
        masks.prune_layer("0", sparsity)
    assert masks.pruned() == {"0": 0}


@given(st.one_of(st.floats(max_value=-1e-12), st.floats(min_value=1.0 + 1e-12)))
def test_any_out_of_range_sparsity_raises(sparsity):
    with pytest.raises(PruningError, match=r"sparsity must be in \[0, 1\]"):
        pruned_count(sparsity, 10)


def test_bad_k_unknown_layer_and_bad_mask_shape_raise():
    with pytest.raises(PruningError):
        magnitude_mask(torch.ones(4), 5)
    with pytest.raises(PruningError):
        magnitude_mask(torch.ones(4), -1)
    masks = MaskState(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)))
    with pytest.raises(PruningError, match="nosuch.*layers: 0, 1"):
        masks.prune_layer("nosuch", 0.5)
    with pytest.raises(PruningError, match="mask shape"):
        masks.set_mask("0", torch.ones(3, 3, dtype=torch.bool))


def test_boundary_sparsities():
    model = nn.Sequential(nn.Linear(5, 7))
    masks = MaskState(model)
    masks.prune_layer("0", 1.0)
    assert masks.pruned() == {"0": 35} and bool((model[0].weight == 0).all())
    masks.restore()
    masks.prune_layer("0", 0.0)
    assert masks.pruned() == {"0": 0} and masks.global_sparsity() == 0.0


def test_biases_stay_untouched_by_pruning():
    model = nn.Sequential(nn.Linear(6, 6))
    bias = model[0].bias.detach().clone()
    MaskState(model).prune_layer("0", 1.0)
    assert torch.equal(model[0].bias.detach(), bias)


# ----------------------------------------------------------------- persistence through optimisers

OPTIMIZERS = {
    "sgd-momentum-wd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=5e-4),
    "sgd-nesterov-wd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2),
    "adam-wd": lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-3),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.05),
}


def prune_after_dense_warmup(device: torch.device, make_opt, *, attach: bool):
    """Train densely (building momentum / Adam moments), prune 60% of every layer, then maybe attach."""
    torch.manual_seed(0)
    model = Net().to(device)
    opt = make_opt(model.parameters())
    for batch in batches(device, 10, seed=1):
        sgd_step(model, opt, batch)
    masks = MaskState(model)
    masks.prune_layers({name: 0.6 for name in masks.names})
    if attach:
        masks.attach(opt)
    return model, opt, masks


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_masks_survive_50_steps_with_dense_optimizer_state(device, opt_name):
    model, opt, masks = prune_after_dense_warmup(device, OPTIMIZERS[opt_name], attach=True)
    # The optimiser state really was built densely and is non-zero at pruned positions.
    for layer in masks.layers:
        state = opt.state[layer.weight]
        buf = state["momentum_buffer"] if "momentum_buffer" in state else state["exp_avg"]
        assert bool((buf[~masks.masks[layer.name]] != 0).any())
    kept_before = {layer.name: layer.weight.detach().clone() for layer in masks.layers}
    counts = masks.pruned()
    for step, batch in enumerate(batches(device, 50, seed=2), start=1):
        sgd_step(model, opt, batch)
        assert pruned_weights_are_zero(masks), f"pruned weight resurrected at step {step}"
        for layer in masks.layers:
            assert bool((layer.weight.grad[~masks.masks[layer.name]] == 0).all())
    assert masks.pruned() == counts
    n_changed = n_kept = 0
    for layer in masks.layers:
        keep = masks.masks[layer.name]
        changed = layer.weight.detach()[keep] != kept_before[layer.name][keep]
        assert bool(changed.any()), f"un-pruned weights of {layer.name} did not train"
        n_changed, n_kept = n_changed + int(changed.sum()), n_kept + int(keep.sum())
    assert n_changed > 0.75 * n_kept  # (a few weights fed only by dead ReLUs get no gradient at all)
    masks.detach()


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_without_hooks_pruned_weights_would_resurrect(opt_name):
    """Control for the test above: its setup does resurrect pruned weights when the masks are not attached."""
    model, opt, masks = prune_after_dense_warmup(torch.device("cpu"), OPTIMIZERS[opt_name], attach=False)
    sgd_step(model, opt, batches(torch.device("cpu"), 1, seed=2)[0])
    assert not pruned_weights_are_zero(masks)


def test_attach_is_idempotent_and_detach_removes_every_hook():
    model, opt, masks = prune_after_dense_warmup(torch.device("cpu"), OPTIMIZERS["sgd-momentum-wd"], attach=True)
    masks.attach(opt)  # again: must replace, not stack, the hooks
    masks.detach()
    sgd_step(model, opt, batches(torch.device("cpu"), 1, seed=3)[0])
    assert not pruned_weights_are_zero(masks)
    masks.apply()
    assert pruned_weights_are_zero(masks)


def test_attach_without_optimizer_masks_gradients_only():
    model, opt, masks = prune_after_dense_warmup(torch.device("cpu"), OPTIMIZERS["sgd-momentum-wd"], attach=False)
    masks.attach()
    opt.zero_grad(set_to_none=True)
    x, y = batches(torch.device("cpu"), 1)[0]
    nn.functional.cross_entropy(model(x), y).backward()
    for layer in masks.layers:
        assert bool((layer.weight.grad[~masks.masks[layer.name]] == 0).all())
        assert bool((layer.weight.grad[masks.masks[layer.name]] != 0).any())
    masks.detach()


# -------------------------------------------------------------------------------------- restore


def test_restore_is_bit_exact_and_in_place(device):
    torch.manual_seed(0)
    model = Net().to(device)
    reference = {k: v.detach().clone() for k, v in model.state_dict().items()}
    tensors = dict(model.state_dict(keep_vars=True))
    pointers = {k: v.data_ptr() for k, v in tensors.items()}
    params = list(model.parameters())

    masks = MaskState(model)
    masks.prune_layers({"conv": 0.5, "dw": 0.9, "pw": 0.3, "fc": 0.99})
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    masks.attach(opt)
    model.train()
    for batch in batches(device, 5):
        sgd_step(model, opt, batch)
    masks.detach()
    assert not torch.equal(model.bn.running_mean, reference["bn.running_mean"])
    assert int(model.bn.num_batches_tracked) == 5

    masks.restore()
    state = model.state_dict(keep_vars=True)
    assert state.keys() == reference.keys()
    for key, value in state.items():
        assert torch.equal(value.detach(), reference[key]), key
        assert value is tensors[key] and value.data_ptr() == pointers[key], f"{key} was not restored in place"
    assert all(a is b for a, b in zip(model.parameters(), params, strict=True))
    assert masks.pruned() == {name: 0 for name in masks.names}
    assert masks.global_sparsity() == 0.0
    assert all(bool(mask.all()) for mask in masks.masks.values())


def test_restore_then_prune_again_reproduces_the_same_masks():
    torch.manual_seed(0)
    model = Net()
    masks = MaskState(model)
    masks.prune_layers({"conv": 0.5, "fc": 0.8})
    first = masks.state_dict()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    masks.restore()
    masks.prune_layers({"conv": 0.5, "fc": 0.8})
    assert all(torch.equal(first[k], v) for k, v in masks.state_dict().items())
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())


def test_snapshot_moves_the_restore_point():
    model = nn.Sequential(nn.Linear(3, 3))
    masks = MaskState(model)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    changed = model[0].weight.detach().clone()
    masks.snapshot()
    masks.prune_layer("0", 0.5)
    masks.restore()
    assert torch.equal(model[0].weight.detach(), changed)


# ------------------------------------------------------------------------------ state dict


def test_state_dict_round_trip_into_fresh_model(device):
    torch.manual_seed(0)
    model = Net().to(device)
    twin = copy.deepcopy(model)
    masks = MaskState(model)
    masks.prune_layers({"conv": 0.25, "dw": 0.5, "pw": 0.75, "fc": 1.0})
    saved = masks.state_dict()
    assert all(m.device.type == "cpu" and m.dtype == torch.bool for m in saved.values())

    twin_masks = MaskState(twin)
    twin_masks.load_state_dict(saved)
    assert twin_masks.pruned() == masks.pruned()
    for name in masks.names:
        assert torch.equal(twin_masks.masks[name].cpu(), saved[name])
        assert twin_masks.masks[name].device.type == device.type
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), twin.state_dict().values(), strict=True))


def test_saved_masks_are_not_changed_by_restore_or_later_pruning():
    model = Net()
    masks = MaskState(model)
    masks.prune_layers({"conv": 0.5, "fc": 0.5})
    saved = masks.state_dict()
    expected = {k: v.clone() for k, v in saved.items()}
    masks.restore()  # resets the live masks to dense
    masks.prune_layers({"conv": 0.9})
    assert all(torch.equal(saved[k], expected[k]) for k in expected)
    # Loading them back, then restoring, must not clobber the caller's tensors either.
    masks.load_state_dict(saved)
    masks.restore()
    assert all(torch.equal(saved[k], expected[k]) for k in expected)


def test_load_state_dict_rejects_unknown_layers_and_accepts_partial():
    masks = MaskState(Net())
    with pytest.raises(PruningError, match="unknown layers.*nosuch"):
        masks.load_state_dict({"nosuch": torch.ones(2, dtype=torch.bool)})
    masks.load_state_dict({"fc": torch.zeros(4, 128, dtype=torch.uint8)})  # non-bool dtype is converted
    assert masks.pruned()["fc"] == 512 and masks.pruned()["conv"] == 0


def test_mask_state_honours_include_exclude_and_explicit_layers():
    model = Net()
    assert MaskState(model, include=["*w"]).names == ["dw", "pw"]
    assert MaskState(model, exclude=["fc"]).names == ["conv", "dw", "pw"]
    assert MaskState(model, find_prunable_layers(model, ["conv"])).names == ["conv"]
    with pytest.raises(PruningError):
        MaskState(nn.Sequential(nn.ReLU()))
