"""Reward designs: formulas, potential-based shaping invariance, kwargs validation, user rewards."""

from __future__ import annotations

import math
import textwrap

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import purl.envs.pruning_env as pruning_env
import purl.envs.rewards as rewards_pkg
from purl.config import load_config
from purl.envs import PruningEnv
from purl.envs.rewards import REWARDS, Reward, RewardContext, make_reward
from purl.errors import ConfigError, PurlError

BUILTIN = ["amc", "amc-flops", "lagrangian", "purl", "shaped"]


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "purl-env-cache"  # shared with test_env.py in one session
    config = load_config(None, [f"cache_dir={cache}", "pretrain.epochs=3"])
    return pruning_env.shared_task(config, torch.device("cpu"))


def ctx(**kw) -> RewardContext:
    base = dict(step=1, n_steps=3, terminal=False, layer="fc1", layer_index=0, pass_index=0, accuracy=0.9,
                dense_accuracy=0.95, target_accuracy=0.93, global_sparsity=0.3, target_sparsity=0.9,
                scheduled_sparsity=0.4, layer_sparsity=0.5, requested_sparsity=0.5, flops=1000.0,
                dense_flops=2000.0, pruned_weights=30, total_weights=100)
    base.update(kw)
    return RewardContext(**base)


def run_episode(env, seed=0):
    env.reset(seed=seed)
    env.action_space.seed(seed)
    done, out = False, []
    while not done:
        _, reward, done, _, info = env.step(env.action_space.sample())
        out.append((reward, info))
    return out


# ----------------------------------------------------------------------------- formulas


def test_registry_lists_the_builtins():
    assert REWARDS.names() == BUILTIN
    assert all(REWARDS.describe()[name] for name in BUILTIN)


def test_purl_reward_progress_and_global_forms():
    progress = make_reward("purl")
    assert progress(ctx()) == pytest.approx({"accuracy": -0.03, "sparsity": -0.1})
    assert progress(ctx(accuracy=0.99, global_sparsity=0.5)) == {"accuracy": 0.0, "sparsity": 0.0}
    literal = make_reward("purl", {"sparsity": "global", "w_acc": 2.0, "w_sp": 0.5})
    assert literal(ctx()) == pytest.approx({"accuracy": -0.06, "sparsity": -0.3})


def test_amc_rewards_pay_only_at_the_end():
    amc, flops = make_reward("amc"), make_reward("amc-flops", {"scale": 2.0})
    assert amc(ctx()) == {"accuracy": 0.0} and flops(ctx()) == {"error_log_flops": 0.0}
    assert amc(ctx(terminal=True)) == {"accuracy": 0.9}
    assert flops(ctx(terminal=True)) == pytest.approx({"error_log_flops": -2.0 * 0.1 * math.log(1000.0)})
    assert flops(ctx(terminal=True, flops=0.0))["error_log_flops"] == 0.0  # log(max(FLOPs, 1))


def test_lagrangian_reward():
    lag = make_reward("lagrangian", {"lam": 2.0})
    assert lag(ctx()) == {"accuracy": 0.0, "sparsity_penalty": 0.0}
    assert lag(ctx(terminal=True, global_sparsity=0.8)) == pytest.approx({"accuracy": 0.9, "sparsity_penalty": -0.2})
    assert lag(ctx(terminal=True, global_sparsity=0.95))["sparsity_penalty"] == 0.0


state = st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.floats(0.0, 1.0))


@settings(max_examples=60, deadline=None)
@given(states=st.lists(state, min_size=2, max_size=8), gamma=st.floats(0.5, 1.0),
       w=st.tuples(st.floats(0.1, 3.0), st.floats(0.1, 3.0), st.floats(0.0, 3.0)))
def test_shaping_changes_the_return_only_by_a_constant(states, gamma, w):
    """Ng et al. 1999: sum_t gamma^t F_t = gamma^T Phi(s_T) - Phi(s_0) = -Phi(s_0) with Phi(terminal) = 0."""
    w_acc, w_sp, lam = w
    shaped = make_reward("shaped", {"gamma": gamma, "w_acc": w_acc, "w_sp": w_sp, "lam": lam})
    n = len(states) - 1
    contexts = [ctx(step=t, n_steps=n, terminal=t == n, accuracy=a, global_sparsity=s, scheduled_sparsity=r)
                for t, (a, s, r) in enumerate(states)]
    shaped.reset(contexts[0])
    discounted = sum(gamma ** (t - 1) * sum(shaped(c).values()) for t, c in enumerate(contexts) if t > 0)
    final = contexts[-1]
    terminal = w_acc * final.accuracy - lam * max(0.0, final.target_sparsity - final.global_sparsity)
    phi0 = w_acc * states[0][0] + w_sp * min(states[0][1] - states[0][2], 0.0)
    assert discounted == pytest.approx(gamma ** (n - 1) * terminal - phi0, abs=1e-9)


# ----------------------------------------------------------------------------- kwargs validation


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("purl", {"w_accuracy": 1.0}, r"unknown key\(s\) w_accuracy for reward 'purl'; allowed: sparsity, w_acc, w_sp"),
        ("purl", {"sparsity": "linear"}, "must be one of progress, global"),
        ("purl", {"w_acc": True}, "must be a number"),
        ("purl", {"w_acc": float("nan")}, "finite"),
        ("amc", {"scale": "big"}, "must be a number"),
        ("shaped", {"gamma": 1.5}, r"gamma.*\(0, 1\]"),
        ("lagrangian", {"lam": -1.0}, "must be >= 0"),
        ("nonexistent", {}, "unknown reward 'nonexistent'; allowed: amc, amc-flops, lagrangian, purl, shaped"),
        ("no_such_module_xyz:Reward", {}, "cannot import module 'no_such_module_xyz'"),
    ],
)
def test_bad_reward_kwargs_and_names(name, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        make_reward(name, kwargs)


def test_ints_are_accepted_for_float_weights():
    reward = make_reward("purl", {"w_acc": 2})
    assert isinstance(reward.w_acc, float) and reward.w_acc == 2.0


# ----------------------------------------------------------------------------- in the environment


@pytest.mark.parametrize("name", BUILTIN)
@pytest.mark.parametrize("mode", ["sparsity-continuous", "sigma"])
def test_components_sum_to_the_reward(task, name, mode):
    env = PruningEnv(task=task, reward=name, action=mode, target_sparsity=0.7)
    for seed in range(2):
        steps = run_episode(env, seed)
        totals: dict[str, float] = {}
        for reward, info in steps:
            comps = info["reward_components"]
            assert reward == pytest.approx(sum(comps.values()), abs=1e-12)
            for key, value in comps.items():
                totals[key] = totals.get(key, 0.0) + value
        summary = steps[-1][1]["purl_episode"]
        assert summary["return"] == pytest.approx(sum(r for r, _ in steps))
        assert summary["components"] == pytest.approx(totals)


def test_terminal_rewards_are_zero_before_the_end(task):
    """The rewards that declare timing 'terminal' are exactly those that pay only on the last step."""
    terminal = [name for name in REWARDS.names() if REWARDS.get(name).timing == "terminal"]
    assert terminal == ["amc", "amc-flops", "lagrangian"]
    for name in terminal:
        steps = run_episode(PruningEnv(task=task, reward=name))
        assert all(reward == 0.0 for reward, _ in steps[:-1])
        assert steps[-1][0] != 0.0
    steps = run_episode(PruningEnv(task=task, reward="purl"))  # per-step: a signal before the end
    assert any(reward != 0.0 for reward, _ in steps[:-1])


def test_a_reward_declaring_one_granularity_is_refused_at_the_other(monkeypatch):
    """The validation reads the reward's declared granularities: one line before any work."""

    class WeightOnly(Reward):
        granularities = ("weight",)

        def __call__(self, ctx: RewardContext) -> dict[str, float]:
            return {"accuracy": ctx.accuracy}

    monkeypatch.setitem(REWARDS._items, "weight-only", WeightOnly)
    assert isinstance(make_reward("weight-only", {}, "weight"), WeightOnly)
    with pytest.raises(ConfigError, match="env.reward 'weight-only' declares granularities weight; it cannot score "
                                          "prune.granularity=channel"):
        make_reward("weight-only", {}, "channel")


def test_amc_reward_is_the_final_accuracy(task):
    steps = run_episode(PruningEnv(task=task, reward="amc", reward_kwargs={"scale": 1.0}))
    assert steps[-1][0] == steps[-1][1]["accuracy"]


def test_purl_progress_reward_is_zero_on_schedule_when_accuracy_holds(task):
    # a uniform policy at the target keeps the sparsity term at ~0 (up to rounding of counts)
    env = PruningEnv(task=task, reward="purl", action="sparsity-discrete", target_sparsity=0.6, budget=False,
                     target_accuracy=0.0)
    idx = env.config.env.sparsity_grid.index(0.6)
    env.reset(seed=0)
    for _ in range(env.n_steps):
        _, reward, _, _, info = env.step(idx)
        assert info["reward_components"]["accuracy"] == 0.0
        assert reward == pytest.approx(0.0, abs=1e-4)


# ----------------------------------------------------------------------------- user rewards


def _docstring_example() -> str:
    doc = rewards_pkg.__doc__
    start = doc.index("e.g.::") + len("e.g.::")
    end = doc.index("Any class works")
    return textwrap.dedent(doc[start:end]).strip() + "\n"


def test_docstring_example_is_short_and_works(task, tmp_path, monkeypatch):
    code = _docstring_example()
    assert len(code.strip().splitlines()) <= 15
    (tmp_path / "purl_user_rewards_doc.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    env = PruningEnv(task=task, reward="purl_user_rewards_doc:OnTrackBonus", reward_kwargs={"bonus": 0.5})
    steps = run_episode(env)
    for _, info in steps:
        assert set(info["reward_components"]) == {"bonus", "final"}
        assert info["reward_components"]["bonus"] in (0.0, 0.5)
    assert steps[-1][1]["reward_components"]["final"] == steps[-1][1]["accuracy"]
    with pytest.raises(ConfigError, match=r"unknown key\(s\) bonsu.*allowed: bonus"):
        PruningEnv(task=task, reward="purl_user_rewards_doc:OnTrackBonus", reward_kwargs={"bonsu": 1})


def test_plain_user_class_loaded_by_module_name(task, tmp_path, monkeypatch):
    (tmp_path / "purl_user_rewards_plain.py").write_text(textwrap.dedent("""
        class Sparsity:
            def __init__(self, scale=1.0):
                self.scale = scale
                self.resets = 0

            def reset(self, ctx):
                self.resets += 1

            def __call__(self, ctx):
                return {"sparsity": self.scale * ctx.global_sparsity}

        class Broken:
            def __call__(self, ctx):
                return {"x": float("nan")}

        class NotADict:
            def __call__(self, ctx):
                return 1.0
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    env = PruningEnv(task=task, reward="purl_user_rewards_plain:Sparsity", reward_kwargs={"scale": 2.0})
    steps = run_episode(env)
    assert steps[-1][0] == pytest.approx(2.0 * steps[-1][1]["global_sparsity"])
    assert env.reward_fn.resets == 1
    with pytest.raises(ConfigError, match="unexpected keyword argument 'gain'"):
        PruningEnv(task=task, reward="purl_user_rewards_plain:Sparsity", reward_kwargs={"gain": 1})
    with pytest.raises(ConfigError, match="has no attribute 'Missing'"):
        PruningEnv(task=task, reward="purl_user_rewards_plain:Missing")
    for bad, message in [("Broken", "not finite"), ("NotADict", "non-empty dict")]:
        env = PruningEnv(task=task, reward=f"purl_user_rewards_plain:{bad}")
        env.reset(seed=0)
        with pytest.raises(PurlError, match=message):
            env.step(env.action_space.sample())


def test_reward_subclass_without_call_is_rejected_at_first_step():
    class Incomplete(Reward):
        defaults = {"a": 1.0}

    reward = Incomplete(a=3)
    assert reward.a == 3.0 and "a=3.0" in repr(reward)
    with pytest.raises(NotImplementedError):
        reward(ctx())
