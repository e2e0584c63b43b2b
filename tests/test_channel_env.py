"""The channel-granularity env (envs/channel_env.py, envs/channel_budget.py): the MDP, the wall, the prior.

A FLOPs or params budget lands within one channel's cost under any policy; the env's masked model computes
what the slimmed model computes; the zero action follows the channel Global MP prior wherever the wall lets
it; episodes are reproducible; what the env cannot do is one clear line.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from purl.baselines.channel import channel_tolerance
from purl.config import load_config
from purl.envs import CHANNEL_ENV_ID, EnvFactory, PruningEnv
from purl.envs.observation import INDEX
from purl.errors import ConfigError
from purl.pruning.channels import prune_channels
from purl.task import build_task

RESNET_TINY = ["data.max_samples=400", "pretrain.max_steps=6", "data.eval_batch_size=256", "env.val_samples=64",
               "prune.granularity=channel", "env.action=prior-relative", "device=cpu"]


@pytest.fixture(scope="module")
def resnet_task(tmp_path_factory: pytest.TempPathFactory):
    cache = tmp_path_factory.mktemp("channel-env-cache")
    config = load_config("configs/mnist5k-resnet20.yaml", [f"cache_dir={cache}", *RESNET_TINY])
    return build_task(config, torch.device("cpu"), progress=False)


def _env(task, *overrides: str, **env_overrides) -> PruningEnv:
    config = load_config("configs/mnist5k-resnet20.yaml", [f"cache_dir={task.config.cache_dir}", *RESNET_TINY,
                                                           *overrides])
    return PruningEnv(config, task=task, granularity="channel", **env_overrides)


def _episode(env: PruningEnv, policy, seed: int = 0) -> tuple[list[float], dict, list[tuple[int, int]]]:
    obs, _ = env.reset(seed=seed)
    rewards, walls = [], []
    done = False
    while not done:
        n = env.sizes[env._ep.layer]
        walls.append((round(float(obs[INDEX["allowed_min"]]) * n), round(float(obs[INDEX["allowed_max"]]) * n)))
        obs, reward, done, truncated, info = env.step(policy(env))
        assert not truncated
        rewards.append(reward)
    return rewards, info, walls


@pytest.mark.parametrize("metric", ["flops", "params"])
@pytest.mark.parametrize("target", [0.5, 0.75])
@pytest.mark.parametrize("policy", ["zero", "low", "high", "random"])
def test_budget_lands_within_one_channel_under_any_policy(resnet_task, metric: str, target: float, policy: str):
    env = _env(resnet_task, f"prune.budget_metric={metric}", f"env.target_sparsity={target}",
               "env.bn_recalibration_batches=0")
    rng = np.random.default_rng(0)
    actions = {"zero": lambda e: np.zeros(1, np.float32), "low": lambda e: -np.ones(1, np.float32),
               "high": lambda e: np.ones(1, np.float32),
               "random": lambda e: rng.uniform(-1, 1, 1).astype(np.float32)}
    _, info, _ = _episode(env, actions[policy])
    episode = info["purl_episode"]
    kept = episode["flops_ratio"] if metric == "flops" else episode["params_ratio"]
    tolerance = channel_tolerance(env.granularity.graph, metric) / env.budget.dense
    assert 1 - target - tolerance - 1e-9 <= kept <= 1 - target + 1e-9, (kept, tolerance)
    assert episode["reaches_target"] and episode["budget_metric"] == metric
    assert abs(episode["global_sparsity"] - (1 - kept)) < 1e-9
    assert all(1 <= k <= s for k, s in zip(episode["channel_keep"].values(), env.sizes, strict=True))


def test_masked_env_model_computes_what_the_slimmed_model_computes(resnet_task):
    env = _env(resnet_task, "prune.budget_metric=flops", "env.target_sparsity=0.6", "env.bn_recalibration_batches=0")
    rng = np.random.default_rng(1)
    _, info, _ = _episode(env, lambda e: rng.uniform(-1, 1, 1).astype(np.float32))
    keep = info["purl_episode"]["channel_keep"]
    slim = prune_channels(resnet_task.model, resnet_task.example_input(), keep, norm="l1").eval()
    x = torch.randn(8, *resnet_task.data.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(env.model(x), slim(x), rtol=1e-4, atol=1e-4)
    assert sum(p.numel() for p in slim.parameters()) < sum(p.numel() for p in resnet_task.model.parameters())


def test_zero_action_follows_the_channel_global_mp_prior_within_the_wall(resnet_task):
    env = _env(resnet_task, "prune.budget_metric=flops", "env.target_sparsity=0.5")
    assert env.prior is not None and sum(env.prior) > 0
    _, info, walls = _episode(env, lambda e: np.zeros(1, np.float32))
    removed = [s - k for s, k in zip(env.sizes, info["purl_episode"]["channel_keep"].values(), strict=True)]
    for i, (r, (lo, hi)) in enumerate(zip(removed, walls, strict=True)):
        assert r == min(max(env.prior[i], lo), hi), (i, r, env.prior[i], lo, hi)
    assert removed[:-1] == env.prior[:-1]  # on ResNet-20 only the last group is moved by the no-overshoot wall


def test_reward_every_step_reset_restores_and_seeded_episodes_repeat(resnet_task):
    env = _env(resnet_task, "prune.budget_metric=params", "env.target_sparsity=0.5")
    dense = {k: v.clone() for k, v in env.model.state_dict().items()}
    actions = np.random.default_rng(3).uniform(-1, 1, (env.n_steps, 1)).astype(np.float32)

    def replay(e):
        return actions[e._ep.layer]

    first, info1, _ = _episode(env, replay, seed=7)
    assert len(first) == env.n_steps == len(env.granularity.groups)
    # a reward at every step: the per-step rewards add up to the episode's return, and they are not all
    # deferred to the end (the purl reward scores each step's accuracy)
    assert sum(first) == pytest.approx(info1["purl_episode"]["return"])
    assert any(r != 0.0 for r in first[:-1]) and len(info1["reward_components"]) > 0
    env.reset(seed=7)
    assert all(torch.equal(v, dense[k]) for k, v in env.model.state_dict().items())
    second, info2, _ = _episode(env, replay, seed=7)
    assert first == second and info1["purl_episode"]["channel_keep"] == info2["purl_episode"]["channel_keep"]


def test_passes_gymnasium_env_checker_and_is_registered(quick_task, resnet_task):
    env = PruningEnv(quick_task.config, task=quick_task, granularity="channel", action="prior-relative")
    check_env(env, skip_render_check=True)
    assert env.n_steps == len(env.granularity.groups) >= 1
    import gymnasium

    made = gymnasium.make(CHANNEL_ENV_ID, config=quick_task.config, task=quick_task, action="prior-relative")
    assert type(made.unwrapped) is PruningEnv and made.unwrapped.granularity.name == "channel"
    config = load_config("configs/quick.yaml", ["prune.granularity=channel"])
    factory = EnvFactory(config, task=quick_task, seed=0)
    assert factory().granularity.name == "channel"
    assert EnvFactory(quick_task.config, task=quick_task)().granularity.name == "weight"


@pytest.mark.parametrize(("overrides", "message"), [
    (["env.action=sigma"], "env.action 'sigma' thresholds individual weights"),
    (["env.finetune_steps=3"], "env.finetune_steps > 0 is not supported at prune.granularity channel"),
    (["env.passes=2", "env.action=sparsity-continuous"], "env.passes > 1 is not supported"),
    (["env.prior=uniform-plus"], "env.prior 'uniform-plus' has no channel version"),
    (["prune.min_channels=60", "env.target_sparsity=0.9"], "the largest feasible target is"),
])
def test_what_the_channel_env_cannot_do_is_one_line(resnet_task, overrides: list[str], message: str):
    with pytest.raises(ConfigError) as info:
        _env(resnet_task, "prune.budget_metric=flops", *overrides)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_budget_metric_is_one_setting_for_agent_and_baselines():
    with pytest.raises(ConfigError, match="differs from prune.budget_metric"):
        load_config("configs/quick.yaml", ["prune.granularity=channel", "env.budget_metric=flops"])
    with pytest.raises(ConfigError, match="differs from prune.budget_metric 'params'"):
        load_config("configs/quick.yaml", ["env.budget_metric=flops"])  # weight granularity: the same one rule
    config = load_config("configs/quick.yaml", ["prune.granularity=channel", "prune.budget_metric=flops"])
    assert config.budget_metric() == "flops"
    assert load_config("configs/quick.yaml", ["env.budget_metric=params"]).budget_metric() == "params"


def test_model_exclude_keeps_every_group_touching_an_excluded_layer_whole(resnet_task):
    """``model.exclude`` at channel granularity: the env, the channel baselines and the task agree on what stays."""
    import dataclasses

    from purl.baselines.run import run_channel_baseline
    from purl.config import MethodSpec

    config = load_config("configs/mnist5k-resnet20.yaml", [f"cache_dir={resnet_task.config.cache_dir}", *RESNET_TINY,
                                                           "model.exclude=[layer3.*]", "prune.budget_metric=flops",
                                                           "env.target_sparsity=0.3", "finetune.max_steps=1"])
    task = dataclasses.replace(resnet_task, config=config)
    ignored = task.channel_ignored_layers()
    assert ignored and all(name.startswith("layer3.") or name == "fc" for name in ignored)
    env = PruningEnv(config, task=task)
    assert not any(name.startswith("layer3.") for g in env.granularity.groups for name in g.layers)
    assert len(env.granularity.groups) < len(_env(resnet_task).granularity.groups)
    row, slim = run_channel_baseline(task, config, MethodSpec(label="c", method="global-mp"), 0.3, seed=0,
                                     progress=False)
    assert set(row["channel_keep"]) == {g.name for g in env.granularity.groups}
    dense = dict(resnet_task.model.named_modules())
    for name, module in slim.named_modules():  # every layer3 conv keeps its dense shape
        if name.startswith("layer3.") and isinstance(module, torch.nn.Conv2d):
            assert module.weight.shape == dense[name].weight.shape, name
    assert dataclasses.replace(resnet_task).channel_ignored_layers() == []


def test_one_env_takes_the_configs_granularity_and_names_an_unknown_one(quick_task):
    config = load_config("configs/quick.yaml", ["prune.granularity=channel"])
    env = PruningEnv(config, task=quick_task)
    assert env.granularity.name == "channel" and env.layer_names == [g.name for g in env.granularity.groups]
    weight = PruningEnv(config, task=quick_task, granularity="weight")
    assert weight.granularity.name == "weight" and weight.layer_names == ["fc1", "fc2", "fc3"]
    with pytest.raises(ConfigError, match="prune.granularity 'heads' has no env; allowed: weight, channel"):
        PruningEnv(config, task=quick_task, granularity="heads")


@pytest.mark.parametrize("policy", ["zero", "random", "high"])
def test_channel_multiple_in_the_env_keeps_round_counts_on_the_budget(resnet_task, policy: str):
    from purl.baselines.channel import ChannelConstraints

    env = _env(resnet_task, "prune.budget_metric=flops", "env.target_sparsity=0.6", "prune.channel_multiple=8",
               "env.bn_recalibration_batches=0")
    rng = np.random.default_rng(2)
    actions = {"zero": lambda e: np.zeros(1, np.float32), "high": lambda e: np.ones(1, np.float32),
               "random": lambda e: rng.uniform(-1, 1, 1).astype(np.float32)}
    _, info, _ = _episode(env, actions[policy])
    keep = info["purl_episode"]["channel_keep"]
    assert all(k == s or k % 8 == 0 for k, s in zip(keep.values(), env.sizes, strict=True)), keep
    tolerance = channel_tolerance(env.granularity.graph, "flops", ChannelConstraints(multiple=8)) / env.budget.dense
    assert 0.4 - tolerance - 1e-9 <= info["purl_episode"]["flops_ratio"] <= 0.4 + 1e-9


def test_budget_nearest_is_the_closest_allowed_count_inside_the_bounds(resnet_task):
    """``ChannelBudget.nearest`` (bisection) against the brute-force definition, with ``prune.channel_multiple``
    so that not every count is allowed: nearest allowed count in ``[lo, hi]``, a tie keeps more channels."""
    budget = _env(resnet_task, "prune.budget_metric=flops", "prune.channel_multiple=4").budget
    rng = np.random.default_rng(0)
    for i, opts in enumerate(budget.options):
        for _ in range(40):
            lo, hi = sorted(int(v) for v in rng.integers(0, opts[-1] + 1, size=2))
            r = float(rng.uniform(-2, opts[-1] + 2))
            inside = [o for o in opts if lo <= o <= hi] or [lo]
            assert budget.nearest(i, r, lo, hi) == min(inside, key=lambda o: (abs(o - r), o))
            assert budget.nearest(i, r) == min(opts, key=lambda o: (abs(o - r), o))
