"""FLOPs budgets at weight granularity (issue #14): allocators and the env land on a fraction of the dense MACs.

Baselines prune at the smallest weight count whose allocation removes the FLOPs target
(baselines/flops_budget.py); the env's wall (envs/flops_budget.py) lands every policy on it, within one
weight's MACs; what cannot work is one clear line.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from purl.baselines import get_allocator
from purl.baselines.flops_budget import flops_equivalent_sparsity, removed_macs
from purl.config import load_config
from purl.envs import PruningEnv
from purl.errors import ConfigError, PruningError
from purl.models import build_model
from purl.pruning import find_prunable_layers, profile_model
from purl.pruning.constraints import Constraints
from purl.task import build_task

RESNET_TINY = ["data.max_samples=400", "pretrain.max_steps=6", "data.eval_batch_size=256", "env.val_samples=64",
               "device=cpu", "prune.budget_metric=flops", "env.bn_recalibration_batches=0"]


@pytest.fixture(scope="module")
def resnet20():
    torch.manual_seed(0)
    model = build_model("resnet-20", input_shape=(1, 8, 8), num_classes=10).eval()
    return model, find_prunable_layers(model), profile_model(model, (1, 8, 8))


@pytest.mark.parametrize("method", ["global-mp", "uniform", "erk", "lamp"])
@pytest.mark.parametrize("target", [0.5, 0.8, 0.95])
def test_allocators_stop_at_the_first_count_that_removes_the_flops_target(resnet20, method: str, target: float):
    _, layers, profiles = resnet20
    allocator = get_allocator(method)
    total = sum(layer.numel for layer in layers)
    dense = sum(p.macs for p in profiles.values())
    sparsity = flops_equivalent_sparsity(allocator, layers, target, Constraints(), profiles)
    k = round(sparsity * total)

    def removed(count: int) -> float:
        return removed_macs(allocator.allocate(layers, count / total, Constraints()), profiles)

    assert removed(k) >= target * dense - 1e-6  # at least the target ...
    assert removed(k - 1) < target * dense  # ... and one weight fewer would miss it


def test_a_flops_target_beyond_the_constraints_names_the_reachable_maximum(resnet20):
    _, layers, profiles = resnet20
    with pytest.raises(PruningError, match="at most 0.") as info:
        flops_equivalent_sparsity(get_allocator("global-mp"), layers, 0.99, Constraints(min_threshold=5.0), profiles)
    assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def resnet_task(tmp_path_factory: pytest.TempPathFactory):
    cache = tmp_path_factory.mktemp("flops-env-cache")
    config = load_config("configs/mnist5k-resnet20.yaml", [f"cache_dir={cache}", *RESNET_TINY])
    return build_task(config, torch.device("cpu"), progress=False)


@pytest.mark.parametrize("action", ["prior-relative", "sparsity-continuous"])
@pytest.mark.parametrize("policy", ["zero", "low", "high", "random"])
def test_env_lands_on_the_flops_budget_under_any_policy(resnet_task, action: str, policy: str):
    env = PruningEnv(resnet_task.config, task=resnet_task, action=action, target_sparsity=0.7)
    rng = np.random.default_rng(0)
    pick = {"zero": lambda: np.zeros(1, np.float32), "low": lambda: -np.ones(1, np.float32),
            "high": lambda: np.ones(1, np.float32), "random": lambda: rng.uniform(-1, 1, 1).astype(np.float32)}
    env.reset(seed=0)
    done = False
    while not done:
        _, _, done, _, info = env.step(pick[policy]())
    episode = info["purl_episode"]
    removed = env.dense_flops - episode["flops"]
    unit = max(m / n for m, n in zip(env.granularity.macs, env.sizes, strict=True))  # one weight's MACs, at most
    assert 0.7 * env.dense_flops - 1 <= removed <= 0.7 * env.dense_flops + unit + 1  # (+-1: MACs rounded to ints)
    assert episode["reaches_target"] and episode["budget_metric"] == "flops"
    assert episode["global_sparsity"] == pytest.approx(removed / env.dense_flops, abs=1e-6)


def test_flops_budget_refusals_are_one_line(resnet_task):
    with pytest.raises(ConfigError, match="env.passes > 1 is not supported with budget_metric flops"):
        PruningEnv(resnet_task.config, task=resnet_task, action="sparsity-continuous", passes=2)
    with pytest.raises(ConfigError, match="schedule 'gradual' with budget_metric 'flops'"):
        load_config("configs/quick.yaml", ["prune.budget_metric=flops", "prune.schedule=gradual"])
    with pytest.raises(ConfigError, match="infeasible"):
        PruningEnv(resnet_task.config, task=resnet_task, target_sparsity=0.999, max_sparsity=0.5)


def test_prune_cli_on_a_flops_budget_reports_the_removed_flops(run_cli, tmp_path):
    import json

    out = tmp_path / "out"
    result = run_cli("prune", "--config", "configs/quick.yaml", "-q", "--device", "cpu", "-o", str(out),
                     f"cache_dir={tmp_path / 'cache'}", "pretrain.epochs=3", "finetune.max_steps=3",
                     "prune.budget_metric=flops", "--method", "erk", "--sparsity", "0.8")
    assert result.rc == 0, result.err
    row = json.loads((out / "results.json").read_text())
    assert row["budget_metric"] == "flops" and row["achieved_sparsity"] >= 0.8 - 1e-9
    assert row["achieved_sparsity"] == pytest.approx(1 - row["sparse_flops"] / row["dense_flops"])
    assert row["achieved_sparsity"] < 0.8 + 0.01 and "weight_sparsity" in row
