"""The env in parts and the callbacks split (issue #12 items 4-5): one "at the target" rule, one env factory,
the episode state, the one evaluation loop, and each SB3 callback usable on its own loop."""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv
from torch import nn

import purl.agents.vec_env
from purl import envs
from purl.agents.callbacks import (
    BestEpisodeTracker,
    Checkpointer,
    EpisodeCsv,
    EpisodeTensorBoard,
    ExactBudgetStop,
    PurlCallback,
    checkpoint_paths,
)
from purl.config import ExperimentConfig, load_config
from purl.envs import EnvFactory, PruningEnv
from purl.envs.budget import Budget
from purl.envs.episode import EpisodeState
from purl.envs.target import episode_meets_target, meets_target, target_count
from purl.training import evaluate_tensors

QUICK = Path(__file__).resolve().parents[1] / "configs" / "quick.yaml"
EPISODE = 3  # the quick MLP's prunable layers


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


@pytest.fixture
def config(quick_task_config: ExperimentConfig) -> ExperimentConfig:
    return load_config(QUICK, [f"cache_dir={quick_task_config.cache_dir}", "pretrain.epochs=3", "device=cpu",
                               "env.val_samples=128"])


# ----------------------------------------------------------------------------- one "at the target" rule
def test_meets_target_is_the_count_rule_where_a_fraction_test_disagrees() -> None:
    # round(0.45 x 5) = 2 pruned is the budget's exact landing point, though 2 / 5 = 0.4 < 0.45
    assert target_count(0.45, 5) == 2
    assert meets_target(2, 5, 0.45) and not meets_target(1, 5, 0.45)
    assert Budget([5], [5], 0.45).target_count == target_count(0.45, 5)
    episode = {"reaches_target": True, "global_sparsity": 0.4}
    assert episode_meets_target(episode, 0.45)
    assert not episode_meets_target({"global_sparsity": 0.4}, 0.45)  # a record written before the flag


def test_env_uses_the_one_rule(config: ExperimentConfig, quick_task) -> None:
    env = PruningEnv(config, task=quick_task)
    count = target_count(env.target_sparsity, env.total_weights)
    at, short = (EpisodeState(env.n_layers, accuracy=1.0, weights_removed=c) for c in (count, count - 1))
    assert env.granularity.reaches(at) and not env.granularity.reaches(short)
    assert env.budget.target_count == count


# ----------------------------------------------------------------------------- one env factory
def test_one_env_factory_is_picklable_and_wraps(config: ExperimentConfig, quick_task) -> None:
    assert purl.agents.vec_env.EnvFactory is envs.EnvFactory
    factory = EnvFactory(config.to_dict(), seed=3, rank=1, task_config=quick_task.config.to_dict(),
                         task=quick_task, wrapper=Monitor)
    env = factory()
    assert isinstance(env, Monitor) and isinstance(env.unwrapped, PruningEnv)
    clone = pickle.loads(pickle.dumps(factory))
    assert clone.task is None and clone.wrapper is Monitor and clone.seed == 3
    assert clone().unwrapped.dense_accuracy == env.unwrapped.dense_accuracy  # rebuilt from the task config


# ----------------------------------------------------------------------------- episode state
def test_reset_starts_a_fresh_episode_state(config: ExperimentConfig, quick_task) -> None:
    env = PruningEnv(config, task=quick_task)
    env.reset(seed=0)
    first = env._ep
    for _ in range(env.n_steps):
        env.step(env.action_space.sample())
    assert isinstance(first, EpisodeState) and first.step == env.n_steps and first.weights_removed > 0
    env.reset(seed=1)
    assert env._ep is not first and env._ep.step == 0 and env._ep.counts == [0] * env.n_layers
    assert env._ep.accuracy == env.dense_accuracy


# ----------------------------------------------------------------------------- one evaluation loop
def test_evaluate_tensors_counts_as_before() -> None:
    torch.manual_seed(0)
    model = nn.Linear(6, 7)
    x, y = torch.randn(50, 6), torch.randint(0, 7, (50,))
    logits = model(x).detach()
    top = logits.topk(5, dim=1).indices
    expected = (int(top[:, 0].eq(y).sum()) / 50, int(top.eq(y.unsqueeze(1)).any(1).sum()) / 50)
    got = evaluate_tensors(model, x, y, batch_size=8)
    assert (got.top1, got.top5) == expected
    assert evaluate_tensors(model, x[:0], y[:0]).top1 == 0.0


# ----------------------------------------------------------------------------- callbacks, each on its own
def _ppo(config: ExperimentConfig, quick_task) -> PPO:
    venv = DummyVecEnv([EnvFactory(config.to_dict(), task=quick_task, wrapper=Monitor)])
    return PPO("MlpPolicy", venv, n_steps=6, batch_size=6, n_epochs=1, seed=0, device="cpu")


@pytest.mark.parametrize("part", ["csv", "tracker", "tensorboard", "checkpointer", "stop"])
def test_each_callback_works_alone_on_an_sb3_loop(config: ExperimentConfig, quick_task, tmp_path: Path,
                                                  part: str) -> None:
    model = _ppo(config, quick_task)
    if part == "tensorboard":
        from stable_baselines3.common.logger import configure

        model.set_logger(configure(str(tmp_path / "tb"), ["tensorboard"]))
    target = config.env.target_sparsity
    callback = {
        "csv": lambda: EpisodeCsv(tmp_path, target_sparsity=target),
        "tracker": lambda: BestEpisodeTracker(tmp_path, target_sparsity=target),
        "tensorboard": lambda: EpisodeTensorBoard(figure_every=2, target_sparsity=target),
        "checkpointer": lambda: Checkpointer(tmp_path, BestEpisodeTracker(tmp_path), checkpoint_every=6),
        "stop": lambda: ExactBudgetStop(9),
    }[part]()
    model.learn(4 * EPISODE, callback=callback)
    if part == "csv":
        with (tmp_path / "episodes.csv").open(newline="") as handle:
            assert [int(r["episode"]) for r in csv.DictReader(handle)] == [1, 2, 3, 4]
    elif part == "tracker":
        assert callback.episodes == 4 and callback.evaluations > 0
        assert callback.best is not None and (tmp_path / "best_episode.json").is_file()
        assert json.loads((tmp_path / "best_episode.json").read_text())["return"] == callback.best["return"]
    elif part == "tensorboard":
        assert callback.episodes == 4 and list((tmp_path / "tb").glob("events.out.tfevents.*"))
    elif part == "checkpointer":
        state = json.loads(checkpoint_paths(tmp_path)["state"].read_text())
        assert state["num_timesteps"] == 4 * EPISODE and state["algo"] == "PPO"
    else:
        assert model.num_timesteps == 9  # stopped mid-rollout at exactly its budget, not at SB3's 12


def test_purl_callback_is_the_callback_list_of_the_parts(tmp_path: Path) -> None:
    callback = PurlCallback(tmp_path, budget=12, state={"episodes": 5, "wall_time_s": 2.0, "evaluations": 7})
    assert isinstance(callback, CallbackList)
    kinds = [type(c) for c in callback.callbacks]
    assert kinds == [EpisodeCsv, BestEpisodeTracker, EpisodeTensorBoard, Checkpointer, ExactBudgetStop]
    assert {c.episodes for c in callback.callbacks[:3]} == {5} and callback.evaluations == 7
    assert len({id(c.clock) for c in callback.callbacks[:3]}) == 1 and callback.wall_time_s == 2.0
