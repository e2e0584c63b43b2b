"""The action wall never disconnects the network: adversarial policies through every action mode on ResNet-20.

Whatever the policy asks (always the minimum, always the maximum, alternating), every episode must end at
exactly the target count, and no layer, the output layer included, may keep fewer weights than the floor:
one per output channel/feature by default (``env.min_layer_weights``), the Minimum Threshold when set.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from purl.config import load_config
from purl.envs import PruningEnv
from purl.envs.budget import default_floor
from purl.pruning import find_prunable_layers
from purl.pruning.constraints import Constraints
from purl.task import build_task

MODES = ("prior-relative", "sparsity-continuous", "sparsity-discrete", "sigma")
POLICIES = ("min", "max", "alternating")


@pytest.fixture(scope="module")
def resnet_task(tmp_path_factory):
    """ResNet-20 on the 8x8 digits, one pre-training epoch (the weights only need to be real), private cache."""
    cache = tmp_path_factory.mktemp("resnet-cache")
    config = load_config(None, [f"cache_dir={cache}", "device=cpu", "model.name=resnet-20", "pretrain.epochs=1"])
    return build_task(config, torch.device("cpu"), progress=False)


def _action(env: PruningEnv, policy: str, step: int):
    space = env.action_space
    low_high = (0, space.n - 1) if hasattr(space, "n") else (-1.0, 1.0)
    pick = {"min": 0, "max": 1, "alternating": step % 2}[policy]
    value = low_high[pick]
    return value if hasattr(space, "n") else np.array([value], dtype=np.float32)


def _final_counts(env: PruningEnv, policy: str) -> dict[str, int]:
    env.reset(seed=0)
    step = 0
    while True:
        _, _, terminated, _, info = env.step(_action(env, policy, step))
        step += 1
        if terminated:
            episode = info["purl_episode"]
            return {name: round(s * n) for (name, s), n in zip(episode["layer_sparsities"].items(), env.sizes,
                                                               strict=True)}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("target", [0.5, 0.95])
@pytest.mark.parametrize("min_threshold", [None, 0.05])
def test_adversarial_policies_hit_the_target_exactly_and_collapse_nothing(resnet_task, mode, target,
                                                                          min_threshold) -> None:
    overrides = [] if min_threshold is None else [f"constraints.min_threshold={min_threshold}"]
    env = PruningEnv(resnet_task.config, task=resnet_task, overrides=overrides, action=mode,
                     target_sparsity=target, val_samples=32)
    layers = find_prunable_layers(env.model)
    mt_floor = Constraints(min_threshold=min_threshold).min_kept(layers)
    target_count = round(target * env.total_weights)
    for policy in POLICIES:
        counts = _final_counts(env, policy)
        assert sum(counts.values()) == target_count, (mode, policy)
        for layer in layers:
            kept = layer.numel - counts[layer.name]
            floor = max(default_floor(layer, "outputs"), min(mt_floor, layer.numel))
            assert kept >= floor > 0, (mode, policy, layer.name, kept, floor)


def test_without_a_floor_the_max_policy_still_keeps_the_action_range(resnet_task) -> None:
    """``min_layer_weights=0`` drops the default floor; ``max_sparsity`` still bounds every layer."""
    env = PruningEnv(resnet_task.config, task=resnet_task, action="sparsity-continuous", target_sparsity=0.95,
                     val_samples=32, min_layer_weights=0, max_sparsity=0.99)
    counts = _final_counts(env, "max")
    for name, n in zip(env.layer_names, env.sizes, strict=True):
        assert counts[name] <= int(0.99 * n)


def test_infeasible_target_under_the_floor_is_one_clear_error(resnet_task) -> None:
    from purl.errors import ConfigError

    with pytest.raises(ConfigError, match="maximum feasible global sparsity"):
        PruningEnv(resnet_task.config, task=resnet_task, target_sparsity=0.998, val_samples=32,
                   min_layer_weights=200)
