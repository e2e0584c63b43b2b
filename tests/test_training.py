"""Training loop and evaluation: masked fine-tuning, step accounting, top-1/top-5, reproducibility."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from purl.config import TrainConfig
from purl.pruning import MaskState
from purl.runtime import seed_everything
from purl.task import new_model
from purl.training import (
    MaskedTrainer,
    cycle,
    evaluate,
    evaluate_tensors,
    make_optimizer,
    momentum_sgd,
    planned_steps,
    train,
)

CPU = torch.device("cpu")


def cfg(**kwargs) -> TrainConfig:
    return TrainConfig(**{"epochs": 1, "lr": 0.05, **kwargs})


# ------------------------------------------------------------------------------------ the one trainer


def _trainer_run(model: nn.Module, dataset, chunks: list[int],
                 masks: MaskState | None = None) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Train a copy of ``model`` with one MaskedTrainer in ``chunks`` of steps; its weights and on_step calls."""
    loader = DataLoader(dataset, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
    trainer = MaskedTrainer(model, momentum_sgd(model, 0.05), cycle(loader), device=CPU, masks=masks)
    calls: list[int] = []
    for n in chunks:
        trainer.steps(n, on_step=calls.append)
    return {k: v.clone() for k, v in model.state_dict().items()}, calls


def test_masked_trainer_in_pieces_equals_one_run(tiny_cnn, toy_loader):
    """The env trains in pieces (a few steps per layer): momentum and batch stream must carry over exactly,
    across the loader's epoch boundary (8 batches) too."""
    dataset = toy_loader.dataset
    whole, calls_whole = _trainer_run(copy.deepcopy(tiny_cnn), dataset, [13])
    pieces, calls_pieces = _trainer_run(copy.deepcopy(tiny_cnn), dataset, [3, 1, 5, 4])
    assert calls_whole == calls_pieces == list(range(1, 14))
    assert all(torch.equal(whole[k], pieces[k]) for k in whole)
    shorter, _ = _trainer_run(copy.deepcopy(tiny_cnn), dataset, [12])
    assert any(not torch.equal(whole[k], shorter[k]) for k in whole)


def test_masked_trainer_keeps_pruned_weights_zero_and_removes_its_hooks(tiny_cnn, toy_loader):
    masks = MaskState(tiny_cnn)
    masks.prune_layers({name: 0.5 for name in masks.names})
    state, _ = _trainer_run(tiny_cnn, toy_loader.dataset, [4, 3], masks=masks)
    for layer in masks.layers:
        pruned = state[f"{layer.name}.weight"][~masks.masks[layer.name]]
        assert pruned.numel() > 0 and int((pruned != 0).sum()) == 0
    assert not masks._handles


# ------------------------------------------------------------------------------------ step accounting


@pytest.mark.parametrize(
    ("epochs", "max_steps", "expected"),
    [(2, None, 16), (3, 5, 5), (1, 100, 8), (0, None, 0), (0, 5, 0), (1, 8, 8)],
)
def test_on_step_once_per_step_one_based_and_max_steps_caps(tiny_cnn, toy_loader, epochs, max_steps, expected):
    assert len(toy_loader) == 8
    steps: list[int] = []
    result = train(tiny_cnn, toy_loader, cfg(epochs=epochs, max_steps=max_steps), device=CPU,
                   on_step=steps.append, progress=False)
    assert steps == list(range(1, expected + 1))
    assert result.steps == expected == planned_steps(cfg(epochs=epochs, max_steps=max_steps), len(toy_loader))
    assert math.isnan(result.final_loss) if expected == 0 else math.isfinite(result.final_loss)


def test_on_step_sees_the_weights_after_the_step(tiny_cnn, toy_loader):
    seen: list[torch.Tensor] = []
    train(tiny_cnn, toy_loader, cfg(max_steps=3), device=CPU, progress=False,
          on_step=lambda step: seen.append(tiny_cnn.fc.weight.detach().clone()))
    assert len(seen) == 3 and not torch.equal(seen[0], seen[1])
    assert torch.equal(seen[-1], tiny_cnn.fc.weight.detach())


def test_training_reduces_the_loss(tiny_cnn, toy_loader):
    before = evaluate(tiny_cnn, toy_loader, device=CPU)
    train(tiny_cnn, toy_loader, cfg(epochs=15, lr=0.05), device=CPU, progress=False)
    after = evaluate(tiny_cnn, toy_loader, device=CPU)
    assert after.top1 > max(before.top1, 0.6)


def test_make_optimizer_follows_the_config(tiny_cnn):
    sgd = make_optimizer(tiny_cnn, cfg(lr=0.3, momentum=0.8, weight_decay=1e-3))
    assert isinstance(sgd, torch.optim.SGD)
    group = sgd.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"], group["nesterov"]) == (0.3, 0.8, 1e-3, True)
    assert make_optimizer(tiny_cnn, cfg(momentum=0.0)).param_groups[0]["nesterov"] is False
    adam = make_optimizer(tiny_cnn, cfg(optimizer="adam", lr=1e-3, weight_decay=0.0))
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["lr"] == 1e-3


# ------------------------------------------------------------------------------ masked fine-tuning


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_masked_finetuning_keeps_sparsity_exactly(quick_task, optimizer):
    model, masks = quick_task.fresh_copy()
    masks.prune_layers({"fc1": 0.9, "fc2": 0.8, "fc3": 0.5})
    counts = masks.pruned()
    saved = masks.state_dict()
    before = {layer.name: layer.weight.detach().clone() for layer in masks.layers}

    def check(step: int) -> None:
        for layer in masks.layers:
            assert bool((layer.weight[~masks.masks[layer.name]] == 0).all()), f"step {step}: {layer.name}"

    loader = quick_task.loader("train")
    result = train(model, loader, cfg(optimizer=optimizer, epochs=2, max_steps=25, lr=0.01), device=CPU, masks=masks,
                   on_step=check, progress=False)
    assert result.steps == 25
    assert masks.pruned() == counts
    assert all(torch.equal(masks.masks[k].cpu(), v) for k, v in saved.items())
    for layer in masks.layers:
        weight, keep = layer.weight.detach(), masks.masks[layer.name]
        assert int((weight[~keep] != 0).sum()) == 0
        assert bool((weight[keep] != before[layer.name][keep]).any())  # the kept weights did train
    # The hooks are gone after training: the model trains freely again afterwards.
    assert not masks._handles
    # The shared dense model is untouched.
    assert all(int((layer.weight == 0).sum()) < layer.numel // 10 for layer in quick_task.prunable_layers())


def test_masked_finetuning_recovers_accuracy(quick_task):
    model, masks = quick_task.fresh_copy()
    masks.prune_layers({name: 0.95 for name in masks.names})
    test = quick_task.loader("test")
    pruned = evaluate(model, test, device=CPU)
    train(model, quick_task.loader("train"), cfg(epochs=2, lr=0.01), device=CPU, masks=masks, progress=False)
    tuned = evaluate(model, test, device=CPU)
    assert tuned.top1 > pruned.top1
    assert masks.global_sparsity() == pytest.approx(0.95, abs=1e-4)


# -------------------------------------------------------------------------------------- evaluation


def test_evaluate_top1_top5_on_known_logits():
    # The "model" is the identity, so inputs are the logits; target ranks: 0, 3 and 7 among 10 classes.
    logits = torch.arange(10, dtype=torch.float32).flip(0).repeat(3, 1)  # class 0 best, class 9 worst
    targets = torch.tensor([0, 3, 7])
    loader = DataLoader(TensorDataset(logits, targets), batch_size=2)
    acc = evaluate(nn.Identity(), loader, device=CPU)
    assert (acc.top1, acc.top5) == (pytest.approx(1 / 3), pytest.approx(2 / 3))
    tensors = evaluate_tensors(nn.Identity(), logits, targets, batch_size=2)
    assert (tensors.top1, tensors.top5) == (acc.top1, acc.top5)


def test_top5_with_fewer_than_five_classes_is_one():
    logits, targets = torch.randn(20, 3), torch.randint(0, 3, (20,))
    acc = evaluate(nn.Identity(), DataLoader(TensorDataset(logits, targets), batch_size=8), device=CPU)
    assert acc.top5 == 1.0 and 0.0 <= acc.top1 <= 1.0


def test_evaluate_on_the_quick_task(quick_task):
    model = quick_task.model
    model.train()
    acc = evaluate(model, quick_task.loader("test"), device=CPU)
    assert model.training  # mode restored
    assert 0.0 <= acc.top1 <= acc.top5 <= 1.0
    assert acc.top1 > 0.5  # 3 epochs on digits learn something
    assert acc == quick_task.dense_test
    x, y = quick_task.data.tensors("test")
    assert evaluate_tensors(model, x, y, batch_size=100) == acc


def test_evaluate_does_not_update_batchnorm(tiny_cnn, toy_loader):
    state = {k: v.clone() for k, v in tiny_cnn.state_dict().items()}
    acc = evaluate(tiny_cnn, toy_loader, device=CPU)
    assert 0.0 <= acc.top1 <= acc.top5 <= 1.0
    assert all(torch.equal(state[k], v) for k, v in tiny_cnn.state_dict().items())


# ---------------------------------------------------------------------------------- reproducibility


def train_from_scratch(quick_task, seed: int) -> nn.Module:
    seed_everything(seed)
    model = new_model(quick_task.config, quick_task.data)
    loader = quick_task.data.loader("train", 64, seed=seed)  # augmented train split
    train(model, loader, cfg(max_steps=20), device=CPU, progress=False)
    return model


def test_same_seed_gives_identical_weights(quick_task):
    first, second = train_from_scratch(quick_task, 0), train_from_scratch(quick_task, 0)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    other = train_from_scratch(quick_task, 1)
    assert not torch.equal(first.state_dict()["fc1.weight"], other.state_dict()["fc1.weight"])


def test_masked_finetuning_is_reproducible(quick_task):
    def run() -> dict[str, torch.Tensor]:
        model, masks = quick_task.fresh_copy()
        masks.prune_layers({name: 0.7 for name in masks.names})
        seed_everything(3)
        train(model, quick_task.loader("train", seed=3), cfg(max_steps=10), device=CPU, masks=masks,
              progress=False)
        return model.state_dict()

    first, second = run(), run()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_restore_after_unmasked_training_brings_back_the_initial_weights(tiny_cnn, toy_loader):
    initial = {k: v.clone() for k, v in tiny_cnn.state_dict().items()}
    masks = MaskState(tiny_cnn)
    train(tiny_cnn, toy_loader, cfg(max_steps=3), device=CPU, progress=False)
    assert not torch.equal(initial["bn1.running_mean"], tiny_cnn.bn1.running_mean)
    masks.restore()
    assert all(torch.equal(initial[k], v) for k, v in tiny_cnn.state_dict().items())


def test_dense_pretraining_of_a_task_is_reproducible(quick_task, tmp_path):
    from purl.task import build_task

    config = quick_task.config.model_copy(update={"cache_dir": str(tmp_path / "cache")})
    again = build_task(config, CPU, progress=False)
    assert not again.from_cache and again.dense_path != quick_task.dense_path
    for (name, a), b in zip(quick_task.model.state_dict().items(), again.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert again.dense_test == quick_task.dense_test


def test_recalibrate_batchnorm_reestimates_running_stats(tiny_cnn) -> None:
    from purl.training import recalibrate_batchnorm

    torch.manual_seed(1)
    batches = [torch.randn(8, 3, 8, 8) for _ in range(3)]
    tiny_cnn.eval()
    with torch.no_grad():
        tiny_cnn.conv1.weight.mul_(0.5)  # shift the statistics the BN layer sees
        expected = torch.stack([tiny_cnn.conv1(b).mean(dim=(0, 2, 3)) for b in batches]).mean(0)
    momentum = tiny_cnn.bn1.momentum
    assert recalibrate_batchnorm(tiny_cnn, batches) is True
    assert torch.allclose(tiny_cnn.bn1.running_mean, expected, atol=1e-6)  # equal batches: mean of batch means
    assert tiny_cnn.bn1.momentum == momentum and not tiny_cnn.training
    assert recalibrate_batchnorm(torch.nn.Sequential(torch.nn.Linear(2, 2)), batches) is False
