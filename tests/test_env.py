"""The pruning MDP: Gymnasium/SB3 compliance, determinism, the exact budget, data hygiene, errors."""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

import purl.envs.config as env_config
import purl.envs.pruning_env as pruning_env
from purl import envs
from purl.config import load_config
from purl.envs import ENV_ID, FEATURES, InvalidActionError, PruningEnv, make_env
from purl.errors import ConfigError, PurlError
from purl.pruning import magnitude_mask
from purl.pruning.constraints import Constraints
from purl.task import build_task

MODES = ["sparsity-continuous", "sparsity-discrete", "sigma"]


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "purl-env-cache"  # shared with test_rewards.py in one session
    return load_config(None, [f"cache_dir={cache}", "pretrain.epochs=3"])


@pytest.fixture(scope="module")
def task(config):
    return pruning_env.shared_task(config, torch.device("cpu"))


def run_episode(env, actions=None, seed=0):
    obs, info = env.reset(seed=seed)
    rewards, infos, observations = [], [], [obs]
    done, t = False, 0
    while not done:
        action = env.action_space.sample() if actions is None else actions[t]
        obs, reward, done, truncated, info = env.step(action)
        assert not truncated
        rewards.append(reward)
        infos.append(info)
        observations.append(obs)
        t += 1
    return rewards, infos, observations


def random_actions(env, n, seed):
    env.action_space.seed(seed)
    return [env.action_space.sample() for _ in range(n)]


# ----------------------------------------------------------------------------- API compliance


@pytest.mark.parametrize("mode", MODES)
def test_env_checkers_pass_without_warnings(task, mode):
    env = gymnasium.make(ENV_ID, task=task, action=mode)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym_check_env(env.unwrapped)
        sb3_check_env(env, warn=True)
    assert not caught, [str(w.message) for w in caught]
    env.close()


def test_make_without_arguments_builds_the_quick_default_task(config, monkeypatch):
    # load_config(None) is the quick default; point it at the test's cache so nothing is pre-trained twice
    monkeypatch.setattr(env_config, "load_config", lambda path=None, overrides=None: config)  # envs/config.py
    env = gymnasium.make(ENV_ID)
    base = env.unwrapped
    assert isinstance(base, PruningEnv)
    assert base.config.data.name == "digits" and base.config.model.name == "mlp"
    assert base.device == torch.device("cpu")
    assert base.layer_names == ["fc1", "fc2", "fc3"]
    env.close()


def test_spaces_and_observation_bounds(task):
    env = PruningEnv(task=task)
    assert env.observation_space == gymnasium.spaces.Box(0.0, 1.0, (len(FEATURES),), np.float32)
    assert env.action_space == gymnasium.spaces.Box(-1.0, 1.0, (1,), np.float32)
    assert PruningEnv(task=task, action="sparsity-discrete").action_space == gymnasium.spaces.Discrete(10)
    assert PruningEnv(task=task, action="sigma", sigma_grid=[1.0, 2.0]).action_space == gymnasium.spaces.Discrete(2)
    _, _, observations = run_episode(env, seed=1)
    for obs in observations:
        assert obs.dtype == np.float32 and obs.shape == (len(FEATURES),)
        assert env.observation_space.contains(obs)


def test_each_env_owns_its_model(task):
    a, b = PruningEnv(task=task), PruningEnv(task=task)
    assert a.model is not task.model and a.model is not b.model
    dense = copy.deepcopy(task.model.state_dict())
    run_episode(a, seed=0)
    for key, value in task.model.state_dict().items():
        assert torch.equal(value, dense[key])


def test_info_keys_and_episode_summary(task):
    env = PruningEnv(task=task, target_sparsity=0.8)
    rewards, infos, _ = run_episode(env, seed=2)
    keys = {"reward_components", "layer_sparsities", "layer", "accuracy", "global_sparsity", "flops",
            "dense_flops", "requested_sparsity", "applied_sparsity", "evaluations"}
    for t, info in enumerate(infos):
        assert keys <= set(info)
        assert "episode" not in info
        assert info["layer"] == env.layer_names[t]
        assert list(info["layer_sparsities"]) == env.layer_names[: t + 1]
        assert 0 <= info["flops"] <= info["dense_flops"]
    summary = infos[-1]["purl_episode"]
    assert "purl_episode" not in infos[0]
    assert summary["return"] == pytest.approx(sum(rewards))
    assert summary["global_sparsity"] == pytest.approx(0.8, abs=1e-4)
    assert summary["accuracy"] == infos[-1]["accuracy"]
    assert summary["meets_target"] == (summary["accuracy"] >= env.target_accuracy)
    assert set(summary["components"]) == set(infos[-1]["reward_components"])
    for name in summary["components"]:
        assert summary["components"][name] == pytest.approx(sum(i["reward_components"][name] for i in infos))
    assert summary["layer_sparsities"] == infos[-1]["layer_sparsities"]
    dense = sum(p.macs for p in task.profiles.values())
    expected = sum(p.macs * (1 - summary["layer_sparsities"].get(n, 0.0)) for n, p in task.profiles.items())
    assert summary["flops"] == round(expected) and infos[-1]["dense_flops"] == dense


def test_step_before_reset_and_after_end_is_an_error(task):
    env = PruningEnv(task=task)
    with pytest.raises(PurlError, match="reset"):
        env.step(np.zeros(1, np.float32))
    run_episode(env)
    with pytest.raises(PurlError, match="reset"):
        env.step(np.zeros(1, np.float32))


def test_render_ansi(task):
    env = PruningEnv(task=task, render_mode="ansi")
    env.reset(seed=0)
    assert "fc1" in env.render()
    with pytest.raises(ConfigError, match="render_mode"):
        PruningEnv(task=task, render_mode="human")


# ----------------------------------------------------------------------------- determinism, caching, reset


@pytest.mark.parametrize("finetune_steps", [0, 2])
def test_same_seed_and_actions_give_identical_rewards_and_masks(task, finetune_steps):
    results = []
    for _ in range(2):
        env = PruningEnv(task=task, finetune_steps=finetune_steps)
        actions = random_actions(env, env.n_steps, seed=5)
        rewards, infos, observations = run_episode(env, actions, seed=11)
        masks = {k: v.clone() for k, v in env.granularity.masks.masks.items()}
        weights = [w.detach().clone() for w in env.granularity.weights]
        results.append((rewards, masks, weights, observations))
    (r1, m1, w1, o1), (r2, m2, w2, o2) = results
    assert r1 == r2
    assert all(torch.equal(m1[k], m2[k]) for k in m1)
    assert all(torch.equal(a, b) for a, b in zip(w1, w2, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(o1, o2, strict=True))


def test_reset_restores_the_dense_model_bit_exactly(task):
    env = PruningEnv(task=task, finetune_steps=2)
    dense = {k: v.clone() for k, v in env.model.state_dict().items()}
    run_episode(env, seed=0)
    assert any(not torch.equal(v, dense[k]) for k, v in env.model.state_dict().items())
    env.reset(seed=1)
    assert all(torch.equal(v, dense[k]) for k, v in env.model.state_dict().items())
    assert all(bool(m.all()) for m in env.granularity.masks.masks.values())


def test_evaluation_cache_reuses_repeated_prefixes(task):
    env = PruningEnv(task=task, action="sparsity-discrete")
    assert env.evaluations == 1  # the dense accuracy, once, at construction
    actions = [3, 5, 0]
    first, infos1, _ = run_episode(env, actions)
    used = env.evaluations
    assert used <= 1 + env.n_steps
    second, infos2, _ = run_episode(env, actions, seed=9)
    assert env.evaluations == used and first == second
    env.reset()
    assert env.evaluations == used  # reset never evaluates
    uncached = PruningEnv(task=task, action="sparsity-discrete", cache_evaluations=False)
    run_episode(uncached, actions)
    run_episode(uncached, actions)
    assert uncached.evaluations == 1 + 2 * uncached.n_steps


def test_dense_rank_masks_match_magnitude_mask_including_ties(task):
    env = PruningEnv(task=task)
    with torch.no_grad():  # force many ties in one layer before its ranks are computed
        env.granularity.weights[1].copy_((env.granularity.weights[1] * 20).round() / 20)
    env.granularity.masks.snapshot()
    for i, weight in enumerate(env.granularity.weights):
        n = weight.numel()
        for k in {0, 1, 2, n // 3, n // 2, n - 1, n}:
            assert torch.equal(env.granularity._dense_mask(i, k), magnitude_mask(weight, k)), (i, k)


# ----------------------------------------------------------------------------- budget and constraints


def total_pruned(env):
    return sum(env.granularity.masks.pruned().values())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("constraints", [[], ["constraints.min_threshold=0.5"], ["constraints.max_sparsity=0.97"]])
def test_budget_lands_exactly_on_the_target(task, mode, constraints):
    env = PruningEnv(task=task, action=mode, target_sparsity=0.9, overrides=constraints)
    target = round(0.9 * env.total_weights)
    layers = task.prunable_layers(env.model)
    caps = Constraints(**env.config.constraints.model_dump()).max_pruned(layers)
    for episode in range(12):
        actions = random_actions(env, env.n_steps, seed=100 + episode)
        _, infos, _ = run_episode(env, actions, seed=episode)
        assert total_pruned(env) == target
        assert infos[-1]["global_sparsity"] == target / env.total_weights
        for name, count in env.granularity.masks.pruned().items():
            assert count <= caps[name]
        for info in infos:  # the budget never overshoots along the way
            assert info["global_sparsity"] <= target / env.total_weights + 1e-12


@pytest.mark.parametrize("mode", MODES)
def test_budget_never_forces_a_layer_beyond_the_action_range(task, mode):
    """At a high target the action wall must not collapse a layer the agent could not ask to prune fully."""
    env = PruningEnv(task=task, action=mode, target_sparsity=0.97, max_sparsity=0.99)
    for episode in range(12):
        run_episode(env, random_actions(env, env.n_steps, seed=200 + episode), seed=episode)
        assert total_pruned(env) == round(0.97 * env.total_weights)
        for name, count in env.granularity.masks.pruned().items():
            assert count <= int(0.99 * env.granularity.masks.layer(name).numel), name


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    actions=st.lists(st.floats(-1.0, 1.0, width=32), min_size=6, max_size=6),
    target=st.floats(0.0, 0.95),
    passes=st.sampled_from([1, 2]),
)
def test_budget_property_continuous(task, actions, target, passes):
    env = PruningEnv(task=task, target_sparsity=target, passes=passes, overrides=["constraints.min_threshold=1.0"])
    _, infos, observations = run_episode(env, [np.array([a], np.float32) for a in actions[: env.n_steps]])
    assert total_pruned(env) == round(target * env.total_weights)
    floor = int(env.total_weights * 1.0 / 100)
    for name, count in env.granularity.masks.pruned().items():
        assert env.granularity.masks.layer(name).numel - count >= min(floor, env.granularity.masks.layer(name).numel)
    if passes == 2:  # a later pass never resurrects pruned weights
        first = infos[env.n_layers - 1]["layer_sparsities"]
        last = infos[-1]["layer_sparsities"]
        assert all(last[n] >= first[n] for n in first)
    for obs in observations:
        assert obs[FEATURES.index("allowed_min")] <= obs[FEATURES.index("allowed_max")] + 1e-6


def test_budget_off_follows_the_actions_within_constraints(task):
    env = PruningEnv(task=task, action="sparsity-discrete", budget=False, overrides=["constraints.max_sparsity=0.5"])
    grid = env.config.env.sparsity_grid
    _, infos, _ = run_episode(env, [1, 2, 9])
    assert [i["requested_sparsity"] for i in infos] == [grid[1], grid[2], grid[9]]
    assert infos[0]["applied_sparsity"] == pytest.approx(grid[1], abs=1e-4)
    assert infos[2]["applied_sparsity"] <= 0.5  # clipped by the constraint, not by a budget


def test_infeasible_target_names_the_max_feasible_sparsity(task):
    with pytest.raises(ConfigError, match=r"maximum feasible global sparsity is 0\.5"):
        PruningEnv(task=task, target_sparsity=0.9, overrides=["constraints.max_sparsity=0.5"])
    with pytest.raises(ConfigError, match="maximum feasible"):
        PruningEnv(task=task, target_sparsity=0.9, overrides=["constraints.keep_dense=[fc2]"])


def test_keep_dense_layer_stays_dense(task):
    env = PruningEnv(task=task, target_sparsity=0.5, overrides=["constraints.keep_dense=[fc3]"])
    run_episode(env, seed=3)
    assert env.granularity.masks.pruned()["fc3"] == 0
    assert total_pruned(env) == round(0.5 * env.total_weights)


def test_sigma_action_prunes_below_alpha_std(task):
    env = PruningEnv(task=task, action="sigma", budget=False)
    env.reset(seed=0)
    w = env.granularity.weights[0].detach().clone()
    _, _, _, _, info = env.step(2)
    alpha = env.config.env.sigma_grid[2]
    expected = float((w.abs() < alpha * w.std(correction=0)).float().mean())
    assert info["requested_sparsity"] == pytest.approx(expected)
    assert info["applied_sparsity"] == pytest.approx(expected)


# ----------------------------------------------------------------------------- data hygiene


def test_episodes_never_touch_the_test_split(task):
    accessed: list[str] = []
    data = copy.copy(task.data)

    class Forbidden(torch.utils.data.Dataset):
        def __len__(self):
            raise AssertionError("the test split was touched")

        def __getitem__(self, index):
            raise AssertionError("the test split was touched")

    def guard(method):
        def wrapped(split, *args, **kwargs):
            accessed.append(split)
            if split == "test":
                raise AssertionError("the test split was touched")
            return method(split, *args, **kwargs)

        return wrapped

    data.test = Forbidden()
    data.split = guard(data.split)
    data.tensors = guard(data.tensors)
    data.loader = guard(data.loader)
    guarded = dataclasses.replace(task, data=data)
    for mode in MODES:
        env = PruningEnv(task=guarded, action=mode, finetune_steps=2, val_samples=100)
        for seed in range(2):
            run_episode(env, seed=seed)
    assert "test" not in accessed and {"val", "train"} <= set(accessed)


def test_val_samples_subsamples_the_reward_split(task):
    env = PruningEnv(task=task, val_samples=50)
    assert env.evaluator.n == 50 and sum(int(y.numel()) for _, y in env.evaluator.chunks) == 50


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("mode", "action", "message"),
    [
        ("sparsity-continuous", np.array([1.5], np.float32), "outside the action space"),
        ("sparsity-continuous", np.array([np.nan], np.float32), "NaN"),
        ("sparsity-continuous", np.zeros(2, np.float32), "shape"),
        ("sparsity-continuous", "half", "not a number"),
        ("sparsity-discrete", 10, r"outside the action space Discrete\(10\)"),
        ("sparsity-discrete", -1, "outside the action space"),
        ("sparsity-discrete", 1.5, "not an integer"),
        ("sparsity-discrete", float("nan"), "NaN"),
        ("sigma", True, "boolean"),
        ("sigma", 7, "outside the action space"),
    ],
)
def test_invalid_actions_raise_clear_errors(task, mode, action, message):
    env = PruningEnv(task=task, action=mode)
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match=message):
        env.step(action)


def test_discrete_actions_accept_numpy_integers_and_arrays(task):
    env = PruningEnv(task=task, action="sparsity-discrete")
    env.reset(seed=0)
    env.step(np.int64(2))
    env.step(np.array([3]))
    env.step(np.array(4.0))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"action": "bogus"}, r"env\.action.*sigma"),
        ({"reward": "nope"}, r"env\.reward.*unknown reward 'nope'; allowed: amc"),
        ({"frobnicate": 1}, r"unknown key 'env\.frobnicate'; allowed: .*target_sparsity"),
        ({"target_sparsity": 1.5}, r"env\.target_sparsity"),
        ({"min_sparsity": 0.8, "max_sparsity": 0.2}, "min_sparsity must be <= max_sparsity"),
        ({"sparsity_grid": []}, "must not be empty"),
        ({"reward": "purl", "reward_kwargs": {"w_acc": "x"}}, r"w_acc.*must be a number"),
        ({"reward": "purl", "reward_kwargs": {"bogus": 1}}, r"unknown key\(s\) bogus.*allowed: sparsity, w_acc, w_sp"),
    ],
)
def test_bad_config_values_raise_config_errors(task, overrides, message):
    with pytest.raises(ConfigError, match=message):
        PruningEnv(task=task, **overrides)


def test_bad_override_and_config_types(task):
    with pytest.raises(ConfigError, match="finetune_steps"):
        PruningEnv(task=task, overrides=["env.finetune_steps=-1"])
    with pytest.raises(ConfigError, match="does not exist"):
        PruningEnv("no/such/config.yaml", task=task)
    with pytest.raises(ConfigError, match="ExperimentConfig"):
        PruningEnv(42, task=task)
    with pytest.raises(ConfigError, match="keep_dense"):
        PruningEnv(task=task, overrides=["constraints.keep_dense=[nomatch*]"])


# ----------------------------------------------------------------------------- agents and vector envs


@pytest.mark.parametrize("mode", MODES)
def test_random_agent_runs_full_episodes(task, mode):
    env = PruningEnv(task=task, action=mode, reward="shaped", finetune_steps=1)
    for seed in range(3):
        rewards, infos, _ = run_episode(env, seed=seed)
        assert len(rewards) == env.n_steps and all(math.isfinite(r) for r in rewards)
        assert "purl_episode" in infos[-1]


def test_fixed_policy_runs_a_full_episode(task):
    env = PruningEnv(task=task, action="sparsity-discrete", target_sparsity=0.6, budget=False)
    idx = env.config.env.sparsity_grid.index(0.6)
    _, infos, _ = run_episode(env, [idx] * env.n_steps)
    summary = infos[-1]["purl_episode"]
    assert all(s == pytest.approx(0.6, abs=1e-3) for s in summary["layer_sparsities"].values())
    assert summary["global_sparsity"] == pytest.approx(0.6, abs=1e-3)


def test_dummy_vec_env(config, task):
    vec = DummyVecEnv([make_env(config, rank=i, seed=0) for i in range(2)])
    vec.seed(0)
    vec.reset()
    for _ in range(3):
        _, rewards, dones, infos = vec.step(np.array([vec.action_space.sample() for _ in range(2)]))
    assert dones.all() and all("purl_episode" in info for info in infos)
    assert vec.envs[0].unwrapped.model is not vec.envs[1].unwrapped.model
    vec.close()


def test_subproc_vec_env(config, task):  # task fixture: the dense model is cached on disk first
    vec = SubprocVecEnv([make_env(config, rank=i, seed=0, action="sparsity-discrete") for i in range(2)])
    try:
        vec.reset()
        for _ in range(3):
            _, rewards, dones, infos = vec.step(np.array([4, 6]))
        assert dones.all() and all("purl_episode" in info for info in infos)
        assert np.isfinite(rewards).all()
    finally:
        vec.close()


def test_env_factory_is_picklable(config):
    import pickle

    factory = make_env(config, rank=1, seed=3, reward="amc")
    clone = pickle.loads(pickle.dumps(factory))
    assert clone.config.env.reward == "amc" and clone.rank == 1


def test_package_exports():
    assert envs.ENV_ID in gymnasium.registry
    assert "PruningEnv" in envs.__all__


def test_config_with_a_given_task_supplies_the_env_settings(config, task):
    env = PruningEnv(config, task=task, overrides=["env.reward=amc", "seed=7"])
    assert env.config.env.reward == "amc" and env.config.seed == 7
    assert env.layer_names == ["fc1", "fc2", "fc3"]


def test_meets_target_needs_the_sparsity_target(task):
    env = PruningEnv(task=task, action="sparsity-discrete", budget=False, target_accuracy=0.0)
    _, infos, _ = run_episode(env, [0] * env.n_steps)
    assert infos[-1]["purl_episode"]["global_sparsity"] == 0.0
    assert infos[-1]["purl_episode"]["meets_target"] is False
    env = PruningEnv(task=task, action="sparsity-discrete", target_accuracy=0.0)
    _, infos, _ = run_episode(env, [0] * env.n_steps)
    assert infos[-1]["purl_episode"]["meets_target"] is True


@pytest.fixture(scope="module")
def bn_task(tmp_path_factory):
    """A BatchNorm network (ResNet-20 on 8x8 digits), briefly pre-trained, in a private cache."""
    cache = tmp_path_factory.mktemp("bn-cache")
    config = load_config(None, [f"cache_dir={cache}", "device=cpu", "model.name=resnet-20", "pretrain.epochs=4"])
    return build_task(config, torch.device("cpu"), progress=False)


def test_bn_recalibration_is_deterministic_and_restores_accuracy(bn_task):
    actions = [np.array([0.0], np.float32)] * 30  # about half of every layer

    def final(**overrides):
        env = PruningEnv(task=bn_task, target_sparsity=0.5, **overrides)
        rewards, infos, _ = run_episode(env, actions[: env.n_steps], seed=0)
        return rewards, infos[-1]["accuracy"]

    plain = final(bn_recalibration_batches=0)  # explicitly off
    recalibrated = final(bn_recalibration_batches=4)
    assert recalibrated == final(bn_recalibration_batches=4)  # a deterministic function of the masks
    assert recalibrated[1] > plain[1]  # stale dense statistics hurt the pruned BN network
    assert final() == recalibrated  # the default 'auto' recalibrates a BN model with AUTO_BN_BATCHES (4)


def test_bn_recalibration_auto_is_off_without_batchnorm(task):
    assert PruningEnv(task=task).bn_recalibration_batches == 0  # the quick MLP has no BatchNorm
