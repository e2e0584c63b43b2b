"""One env on a Granularity strategy (envs/granularity/): the same MDP and the same units at every granularity.

Both granularities run through one `PruningEnv`; an episode's named costs are what the model in place holds
(`weights_removed` = its zeroed Conv/Linear weights); observation feature 10 and the reward's
`global_sparsity` are the removed fraction of the budget metric, the quantity the target (feature 12) is in.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from purl.envs import GRANULARITIES, PruningEnv, Reward, granularity_class
from purl.envs.observation import INDEX
from purl.errors import ConfigError

CASES = [("weight", []), ("weight", ["prune.budget_metric=flops"]), ("channel", []),
         ("channel", ["prune.budget_metric=params"])]


class Recorder(Reward):
    """A zero reward that keeps every RewardContext it sees (the tests read the fields the env fills in)."""

    seen: list = []

    def __call__(self, ctx):
        Recorder.seen.append(ctx)
        return {"zero": 0.0}


def _zeroed_weights(model: nn.Module) -> int:
    return sum(int((m.weight == 0).sum()) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear))


@pytest.mark.parametrize(("granularity", "overrides"), CASES)
def test_units_mean_the_same_at_every_granularity_and_metric(quick_task, granularity, overrides) -> None:
    env = PruningEnv(quick_task.config, task=quick_task, granularity=granularity,
                     overrides=[*overrides, "env.action=sparsity-continuous",
                                "env.reward=tests.test_granularity:Recorder"])
    seen = type(env.reward_fn).seen  # the class the env imported by name
    seen.clear()
    assert env.budget_metric == ("flops" if "prune.budget_metric=flops" in overrides else "params")
    obs, _ = env.reset(seed=0)
    env.action_space.seed(0)
    dense_zeros = _zeroed_weights(env.model)
    done = False
    while not done:
        obs, _, done, _, info = env.step(env.action_space.sample())
        ctx = seen[-1]
        assert obs[INDEX["global_sparsity"]] == pytest.approx(info["global_sparsity"], abs=1e-6)
        assert obs[INDEX["target_sparsity"]] == pytest.approx(env.target_sparsity, abs=1e-6)
        assert ctx.global_sparsity == info["global_sparsity"] and ctx.budget_metric == env.budget_metric
        assert ctx.pruned_weights == _zeroed_weights(env.model) - dense_zeros  # what the model in place holds
        assert ctx.flops == info["flops"] and ctx.total_weights == env.total_weights
    episode = info["purl_episode"]
    assert episode["reaches_target"] and episode["global_sparsity"] >= env.target_sparsity - 1e-3
    if granularity == "weight" and env.budget_metric == "flops":  # a MACs fraction, not the weights'
        assert info["global_sparsity"] == pytest.approx(1 - info["flops"] / info["dense_flops"], abs=1e-6)
    env.reset(seed=1)
    assert _zeroed_weights(env.model) == dense_zeros  # restored in place


def test_the_channel_id_is_the_same_class(quick_task) -> None:
    import gymnasium

    made = gymnasium.make("purl/ChannelPruning-v0", config=quick_task.config, task=quick_task).unwrapped
    assert type(made) is PruningEnv and made.granularity.name == "channel"
    assert set(GRANULARITIES) == {"weight", "channel"}


def test_an_unknown_granularity_is_one_line(quick_task) -> None:
    config = quick_task.config.model_copy(update={"prune": quick_task.config.prune.model_construct(
        **{**quick_task.config.prune.model_dump(), "granularity": "heads"})})
    with pytest.raises(ConfigError, match="prune.granularity 'heads' has no env; allowed: weight, channel"):
        granularity_class(config)


def test_each_granularity_refuses_what_it_cannot_do_before_any_work(quick_task) -> None:
    with pytest.raises(ConfigError, match="env.passes > 1 is not supported at prune.granularity channel"):
        PruningEnv(quick_task.config, task=quick_task, granularity="channel",
                   overrides=["env.action=sparsity-continuous", "env.passes=2"])
    with pytest.raises(ConfigError, match="env.passes > 1 is not supported with budget_metric flops"):
        PruningEnv(quick_task.config, task=quick_task,
                   overrides=["env.action=sparsity-continuous", "env.passes=2", "prune.budget_metric=flops"])


def test_same_seed_same_episode_at_both_granularities(quick_task) -> None:
    for granularity in ("weight", "channel"):
        runs = []
        for _ in range(2):
            env = PruningEnv(quick_task.config, task=quick_task, granularity=granularity)
            env.reset(seed=3)
            env.action_space.seed(3)
            rewards, done = [], False
            while not done:
                _, r, done, _, info = env.step(env.action_space.sample())
                rewards.append(r)
            runs.append((rewards, info["purl_episode"]["layer_sparsities"]))
        assert runs[0] == runs[1]
        assert np.isfinite(runs[0][0]).all()
    torch.manual_seed(0)
