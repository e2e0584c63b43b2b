"""The prior-relative action: the zero policy is the prior, deviations are spread in proportion to it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from purl.baselines import get_allocator
from purl.config import load_config
from purl.envs import PruningEnv
from purl.envs.actions import PriorRelative
from purl.errors import ConfigError
from purl.pruning import find_prunable_layers
from purl.pruning.constraints import Constraints
from purl.task import build_task


@pytest.fixture(scope="module")
def resnet_task(tmp_path_factory):
    cache = tmp_path_factory.mktemp("prior-cache")
    config = load_config(None, [f"cache_dir={cache}", "device=cpu", "model.name=resnet-20", "pretrain.epochs=1"])
    return build_task(config, torch.device("cpu"), progress=False)


def _episode(env: PruningEnv, actions) -> list[int]:
    env.reset(seed=0)
    for t in range(env.n_steps):
        _, _, terminated, _, info = env.step(np.array([actions(t)], dtype=np.float32))
    assert terminated
    return [round(s * n) for s, n in zip(info["purl_episode"]["layer_sparsities"].values(), env.sizes,
                                         strict=True)]


@pytest.mark.parametrize("prior", ["global-mp", "erk", "lamp", "uniform"])
@pytest.mark.parametrize("min_threshold", [None, 0.05])
def test_zero_action_reproduces_the_allocators_exact_counts(resnet_task, prior, min_threshold) -> None:
    overrides = [] if min_threshold is None else [f"constraints.min_threshold={min_threshold}"]
    env = PruningEnv(resnet_task.config, task=resnet_task, overrides=overrides, action="prior-relative",
                     prior=prior, target_sparsity=0.9, val_samples=32)
    layers = find_prunable_layers(env.model)
    expected = get_allocator(prior).allocate(layers, 0.9, Constraints(min_threshold=min_threshold))
    wanted = [expected[layer.name] for layer in layers]
    caps = env.budget.max_removed
    if all(w <= c for w, c in zip(wanted, caps, strict=True)):
        assert env.prior == wanted  # the allocator's exact counts
    else:  # e.g. uniform would take the 144-weight stem below one weight per output: capped, excess spread
        assert sum(env.prior) == sum(wanted) and all(p <= c for p, c in zip(env.prior, caps, strict=True))
        assert all(p >= min(w, c) for p, w, c in zip(env.prior, wanted, caps, strict=True))
    assert _episode(env, lambda t: 0.0) == env.prior


def test_a_deviation_is_spread_over_the_remaining_layers_in_proportion(resnet_task) -> None:
    env = PruningEnv(resnet_task.config, task=resnet_task, action="prior-relative", target_sparsity=0.8,
                     val_samples=32)
    prior = env.prior
    counts = _episode(env, lambda t: -1.0 if t == 0 else 0.0)  # prune the first layer less, then follow
    assert counts[0] < prior[0]
    assert sum(counts) == sum(prior)
    extra = prior[0] - counts[0]
    ratio = (sum(prior[1:]) + extra) / sum(prior[1:])
    for got, want in zip(counts[1:], prior[1:], strict=True):  # every later layer takes its share, to rounding
        assert abs(got - want * ratio) <= 1.0 + 1e-9


def test_action_map_logit_form() -> None:
    amap = PriorRelative(scale=2.0)
    weight = torch.zeros(100)
    assert amap.requested(np.array([0.0]), weight, 0, True, base=37) == (0.37, 37)
    s, k = amap.requested(np.array([1.0]), weight, 0, True, base=50)
    assert s == pytest.approx(1 / (1 + np.exp(-2.0))) and k == round(s * 100)
    s, k = amap.requested(np.array([1.0]), weight, 0, True, base=0)  # a dense prior layer can still move
    assert k > 0


def test_prior_mode_errors_are_clear(resnet_task) -> None:
    with pytest.raises(ConfigError, match="env.prior 'nope'"):
        PruningEnv(resnet_task.config, task=resnet_task, action="prior-relative", prior="nope", val_samples=32)
    with pytest.raises(ConfigError, match="env.prior 'layerwise': allocator 'layerwise' needs the option\\(s\\) "
                                          "sparsities"):  # a map allocator has no prior of its own
        PruningEnv(resnet_task.config, task=resnet_task, action="prior-relative", prior="layerwise", val_samples=32)
    with pytest.raises(ConfigError, match="passes: 1"):
        PruningEnv(resnet_task.config, task=resnet_task, action="prior-relative", passes=2, val_samples=32)
