"""Zhu & Gupta's cubic schedule and the GradualPruner training callback."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from purl.baselines import Constraints, CubicSchedule, GradualPruner, make_gradual_schedule
from purl.baselines.global_mp import GlobalMagnitude
from purl.errors import ConfigError, PruningError
from purl.pruning import MaskState


def test_cubic_values_at_start_middle_end_by_hand():
    # s_i = 0.1, s_f = 0.9, t0 = 10, n = 4 pruning steps of dt = 5 -> end at 30
    sched = CubicSchedule(0.1, 0.9, start_step=10, n_steps=4, frequency=5)
    assert sched.end_step == 30
    assert sched.sparsity_at(0) == 0.1  # before t0: s_i
    assert sched.sparsity_at(10) == 0.1  # at t0
    # middle t = 20: 0.9 + (0.1 - 0.9) * (1 - 10/20)^3 = 0.9 - 0.8 / 8 = 0.8
    assert sched.sparsity_at(20) == pytest.approx(0.8)
    # t = 15: 0.9 - 0.8 * 0.75^3 = 0.5625
    assert sched.sparsity_at(15) == pytest.approx(0.9 - 0.8 * 0.421875)
    assert sched.sparsity_at(30) == 0.9  # exactly s_f at the end
    assert sched.sparsity_at(1000) == 0.9
    values = [sched.sparsity_at(t) for t in range(0, 40)]
    assert values == sorted(values)  # monotone


def test_update_steps_and_end_step_variant():
    sched = CubicSchedule(0.0, 0.5, start_step=10, n_steps=4, frequency=5)
    assert sched.update_steps() == [10, 15, 20, 25, 30]
    assert [t for t in range(0, 50) if sched.should_update(t)] == [10, 15, 20, 25, 30]
    odd = CubicSchedule(0.0, 0.5, start_step=0, end_step=23, frequency=10)  # span not a multiple of dt
    assert odd.update_steps() == [0, 10, 20, 23]
    assert [t for t in range(0, 50) if odd.should_update(t)] == [0, 10, 20, 23]
    # sparsity at the middle of an end_step schedule: progress 0.5 -> 0.5 - 0.5 / 8
    assert CubicSchedule(0.0, 0.5, 0, end_step=100).sparsity_at(50) == pytest.approx(0.4375)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"initial": 0.5, "final": 0.2, "start_step": 0, "n_steps": 3}, "must not exceed"),
        ({"initial": 0.0, "final": 1.2, "start_step": 0, "n_steps": 3}, "final sparsity"),
        ({"initial": 0.0, "final": 0.5, "start_step": -1, "n_steps": 3}, "start_step"),
        ({"initial": 0.0, "final": 0.5, "start_step": 0}, "exactly one of"),
        ({"initial": 0.0, "final": 0.5, "start_step": 0, "n_steps": 3, "end_step": 9}, "exactly one of"),
        ({"initial": 0.0, "final": 0.5, "start_step": 5, "end_step": 5}, "must be after"),
        ({"initial": 0.0, "final": 0.5, "start_step": 0, "n_steps": 3, "frequency": 0}, "frequency"),
        ({"initial": 0.0, "final": 0.5, "start_step": 0, "n_steps": 0}, "n_steps"),
    ],
)
def test_schedule_validation(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        CubicSchedule(**kwargs)


def test_make_gradual_schedule():
    sched = make_gradual_schedule(0.9, total_steps=1000, frequency=100)
    assert (sched.start_step, sched.end_step, sched.frequency) == (0, 750, 100)
    assert sched.sparsity_at(750) == 0.9 and sched.sparsity_at(0) == 0.0
    late = make_gradual_schedule(0.8, total_steps=200, frequency=30, start_fraction=0.25, end_fraction=0.5)
    assert late.update_steps() == [50, 80, 100]
    with pytest.raises(ConfigError, match="below end_fraction"):
        make_gradual_schedule(0.9, 100, start_fraction=0.8, end_fraction=0.5)
    with pytest.raises(ConfigError, match="too small"):
        make_gradual_schedule(0.9, 2, start_fraction=0.4, end_fraction=0.6)


def small_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))


@pytest.mark.parametrize("allocator", ["global-mp", "uniform", "erk", "lamp", "random"])
def test_gradual_pruner_reaches_final_exactly_during_training(allocator):
    model = small_model()
    masks = MaskState(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    masks.attach(opt)
    sched = make_gradual_schedule(0.8, total_steps=40, frequency=5, start_fraction=0.1, end_fraction=0.6)
    pruner = GradualPruner(allocator, masks, sched, generator=torch.Generator().manual_seed(0))
    total = sum(masks.numels().values())
    seen = []
    x, y = torch.randn(32, 12), torch.randint(0, 3, (32,))
    for step in range(1, 41):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        pruner.on_step(step)
        seen.append(sum(masks.pruned().values()))
        if step >= sched.end_step:
            assert sum(masks.pruned().values()) == round(0.8 * total)
    assert seen[-1] == round(0.8 * total)
    assert seen == sorted(seen)  # sparsity only grows
    assert [s for s, _ in pruner.history] == sched.update_steps()[1:]  # step 4: target 0 skipped
    assert pruner.history[-1] == (sched.end_step, 0.8)
    assert pruner.finished
    for name, mask in masks.masks.items():  # pruned weights stayed zero through training
        assert torch.count_nonzero(masks.layer(name).weight[~mask]) == 0


def test_gradual_pruner_catches_up_when_end_step_missed_and_validates_target():
    model = small_model()
    masks = MaskState(model)
    sched = CubicSchedule(0.0, 0.6, start_step=0, n_steps=2, frequency=10)  # updates 0, 10, 20
    pruner = GradualPruner(GlobalMagnitude(), masks, sched)
    assert pruner(10) is not None
    assert pruner(15) is None
    result = pruner(27)  # step 20 was never reported (e.g. a resumed run)
    assert result is not None and result.pruned == round(0.6 * sum(masks.numels().values()))
    assert pruner(28) is None and pruner.finished
    state = pruner.state_dict()
    other = GradualPruner("global-mp", masks, sched)
    other.load_state_dict(state)
    assert other.finished and other.history == pruner.history
    with pytest.raises(PruningError, match="at most"):
        GradualPruner("global-mp", masks, CubicSchedule(0.0, 0.99, 0, n_steps=1), Constraints(min_weights=50))
