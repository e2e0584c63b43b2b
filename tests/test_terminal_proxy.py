"""``env.terminal_proxy_steps``: the last step of an episode scores the allocation by the short-fine-tune proxy.

The env's one-shot accuracy ranks allocations near the best baseline no better than chance on ResNet-20
(docs/RESULTS.md, search signals); a k-step fine-tune ranks them close to the fine-tuned truth. With the option on,
the terminal step's accuracy (what ``amc`` rewards and what the selection ranks episodes by) is that proxy score.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from purl.agents.policy import apply_policy
from purl.config import load_config
from purl.envs import PruningEnv
from purl.errors import ConfigError
from purl.proxy import short_finetune
from tests.conftest import QUICK_CONFIG

STEPS = 5


@pytest.fixture
def config(quick_task_config):
    def make(*overrides: str):
        return load_config(QUICK_CONFIG, [f"cache_dir={quick_task_config.cache_dir}", "pretrain.epochs=3",
                                          "device=cpu", "env.target_sparsity=0.9", "env.val_samples=200",
                                          "env.action=prior-relative", "env.prior=global-mp", *overrides])
    return make


def _episode(env: PruningEnv, actions: list[float]) -> tuple[list[float], dict]:
    env.reset(seed=0)
    rewards, info = [], {}
    for a in actions:
        _, r, terminated, _, info = env.step(np.array([a], dtype=np.float32))
        rewards.append(r)
        if terminated:
            break
    return rewards, info["purl_episode"]


def _actions(env: PruningEnv, value: float) -> list[float]:
    return [value] * env.n_steps


def test_the_terminal_accuracy_is_the_proxy_score_of_the_allocation(quick_task, config) -> None:
    env = PruningEnv(config(f"env.terminal_proxy_steps={STEPS}", "env.reward=amc"), task=quick_task)
    rewards, episode = _episode(env, _actions(env, 0.3))
    model, masks = apply_policy(quick_task, episode["layer_sparsities"])
    expected = short_finetune(quick_task, model, masks, steps=STEPS, seed=env.config.seed,
                              val_samples=env.config.env.val_samples).top1
    assert episode["accuracy"] == pytest.approx(expected)
    assert rewards[:-1] == [0.0] * (len(rewards) - 1) and rewards[-1] == pytest.approx(expected)  # amc: terminal only
    assert episode["oneshot_accuracy"] != episode["accuracy"]  # five SGD steps move a 90%-sparse MLP


def test_intermediate_steps_and_the_default_stay_one_shot(quick_task, config) -> None:
    plain = PruningEnv(config(), task=quick_task)
    proxied = PruningEnv(config(f"env.terminal_proxy_steps={STEPS}"), task=quick_task)
    plain_rewards, plain_episode = _episode(plain, _actions(plain, -0.2))
    proxy_rewards, proxy_episode = _episode(proxied, _actions(proxied, -0.2))
    assert proxy_rewards[:-1] == plain_rewards[:-1]  # the per-step signal before the last step is unchanged
    assert "oneshot_accuracy" not in plain_episode
    assert proxy_episode["oneshot_accuracy"] == pytest.approx(plain_episode["accuracy"])
    assert proxy_episode["layer_sparsities"] == plain_episode["layer_sparsities"]


def test_memoised_by_allocation_and_deterministic(quick_task, config) -> None:
    env = PruningEnv(config(f"env.terminal_proxy_steps={STEPS}"), task=quick_task)
    _, first = _episode(env, _actions(env, 0.1))
    _, again = _episode(env, _actions(env, 0.1))
    assert env.proxy_evaluations == 1 and again["accuracy"] == first["accuracy"]
    _, other = _episode(env, _actions(env, -0.4))
    assert env.proxy_evaluations == 2 and other["layer_sparsities"] != first["layer_sparsities"]
    fresh = PruningEnv(config(f"env.terminal_proxy_steps={STEPS}"), task=quick_task)
    _, replay = _episode(fresh, _actions(fresh, 0.1))
    assert replay["accuracy"] == first["accuracy"]


def test_the_callers_random_streams_are_left_alone(quick_task, config) -> None:
    env = PruningEnv(config(f"env.terminal_proxy_steps={STEPS}"), task=quick_task)
    random.seed(11), np.random.seed(11), torch.manual_seed(11)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(11), np.random.seed(11), torch.manual_seed(11)
    _episode(env, _actions(env, 0.2))
    assert env.proxy_evaluations == 1
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_refused_at_channel_granularity(quick_task, config) -> None:
    cfg = config("prune.granularity=channel", "env.action=sparsity-continuous", "env.prior=global-mp",
                 f"env.terminal_proxy_steps={STEPS}")
    with pytest.raises(ConfigError, match="terminal_proxy_steps"):
        PruningEnv(cfg, task=quick_task)
