"""Tests of the agents package: algorithms, training, checkpoints/resume, logging, policy extraction.

Everything runs on CPU on the quick task (digits + MLP, 3 layers, so an episode is 3 steps),
pre-trained for 3 epochs in a session-wide tmp cache (``quick_task`` in conftest.py), with a
100-sample reward split and a handful of env steps per run.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import torch
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from purl import agents
from purl.agents import (
    apply_policy,
    list_algorithms,
    make_agent,
    make_vec_env,
    policy_sparsities,
    train_agent,
    validate_agent_config,
)
from purl.agents.callbacks import BestEpisodeTracker, checkpoint_paths
from purl.agents.run import cell_config, learning_curve
from purl.config import ExperimentConfig, MethodSpec, load_config
from purl.errors import ConfigError, PurlError, RegistryError
from purl.pruning import pruned_count

EPISODE = 3  # prunable layers of the quick task's MLP = steps per episode
FAST = ["env.val_samples=100", "finetune.max_steps=5", "agent.progress_bar=false", "device=cpu"]
ACTIONS = {"ppo": "sparsity-continuous", "a2c": "sigma", "dqn": "sparsity-discrete", "sac": "sparsity-continuous",
           "td3": "sparsity-continuous", "ddpg": "sparsity-continuous", "trpo": "prior-relative",
           "ars": "prior-relative", "tqc": "sparsity-continuous", "crossq": "sparsity-continuous"}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny networks: every test here runs with one intra-op thread (see conftest's ``one_thread``)."""


@pytest.fixture
def agent_config(quick_task_config: ExperimentConfig):
    """``agent_config(*overrides)``: the quick task's config (same dense-model cache) plus fast settings."""

    def make(*overrides: str) -> ExperimentConfig:
        raw_overrides = [f"cache_dir={quick_task_config.cache_dir}", "pretrain.epochs=3", *FAST, *overrides]
        return load_config(Path(__file__).resolve().parents[1] / "configs" / "quick.yaml", raw_overrides)

    return make


def ppo_small(total: int = 4 * EPISODE, *extra: str) -> list[str]:
    """A PPO with a 2-episode rollout, so a few steps make whole updates."""
    return [f"agent.total_timesteps={total}", "agent.hyperparams={n_steps: 6, batch_size: 6, n_epochs: 2}", *extra]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


# ----------------------------------------------------------------------------- registry and validation


def test_list_algorithms_names_all_six() -> None:
    names = list_algorithms()
    assert set(names) >= {"ppo", "a2c", "dqn", "sac", "td3", "ddpg"}
    assert all(text for text in names.values())


def test_ars_drives_one_env_and_its_budget_is_whole_updates(agent_config, quick_task, tmp_path: Path) -> None:
    """ARS declares max_envs=1 (a clear error otherwise); its budget rounds up to whole updates (2 x n_delta
    episodes), and every evaluated episode reaches PuRL's search record."""
    with pytest.raises(ConfigError, match="agent.algo=ars drives at most 1 env\\(s\\); set agent.n_envs=1"):
        validate_agent_config(agent_config("agent.algo=ars", "env.action=prior-relative", "agent.n_envs=2",
                                           "agent.hyperparams={}"))
    config = agent_config("agent.algo=ars", "env.action=prior-relative", f"agent.total_timesteps={EPISODE + 1}",
                          "agent.hyperparams={n_delta: 2}")
    run = train_agent(config, output_dir=tmp_path, task=quick_task, progress=False)
    assert run.env_steps == run.model.num_timesteps == 4 * EPISODE  # 4 steps asked: one whole update
    assert run.episodes == 4 and len(read_csv(tmp_path / "episodes.csv")) == 4


def test_dqn_on_continuous_action_is_a_clear_config_error(agent_config) -> None:
    config = agent_config("agent.algo=dqn", "env.action=sparsity-continuous", "agent.hyperparams={}")
    with pytest.raises(ConfigError, match=r"DQN.*env.action=sparsity-discrete or env.action=sigma"):
        validate_agent_config(config)


@pytest.mark.parametrize("algo", ["sac", "td3", "ddpg"])
def test_continuous_algorithms_reject_discrete_actions(agent_config, algo: str) -> None:
    with pytest.raises(ConfigError, match="env.action=sparsity-continuous"):
        validate_agent_config(agent_config(f"agent.algo={algo}", "env.action=sigma", "agent.hyperparams={}"))


def test_unknown_hyperparameter_names_it_and_lists_accepted(agent_config) -> None:
    with pytest.raises(ConfigError) as info:
        validate_agent_config(agent_config("agent.hyperparams={n_stepz: 8}"))
    message = str(info.value)
    assert "n_stepz" in message and "PPO" in message
    assert "n_steps" in message and "learning_rate" in message  # the accepted ones, from the signature
    with pytest.raises(ConfigError, match=r"'n_epochs' belongs to PPO.*agent.hyperparams=\{\}"):
        validate_agent_config(agent_config("agent.algo=sac"))  # quick.yaml's PPO settings, algo switched


def test_managed_and_policy_kwargs_keys_are_checked(agent_config) -> None:
    with pytest.raises(ConfigError, match="seed"):
        validate_agent_config(agent_config("agent.hyperparams={seed: 3}"))
    with pytest.raises(ConfigError, match="net_arc.*accepted: .*net_arch"):
        validate_agent_config(agent_config("agent.policy_kwargs={net_arc: [8]}"))


def test_unknown_algorithm_is_a_registry_error(agent_config) -> None:
    with pytest.raises(RegistryError, match="unknown agent algorithm 'ppo2'.*ppo"):
        validate_agent_config(agent_config("agent.algo=ppo2"))


def test_make_agent_uses_yaml_hyperparams_policy_kwargs_and_seed(agent_config, quick_task) -> None:
    config = agent_config("agent.algo=td3", "seed=5",
                          "agent.hyperparams={learning_rate: 0.0005, action_noise: 0.2}",
                          "agent.policy_kwargs={net_arch: [16, 16], activation_fn: tanh}")
    venv = make_vec_env(config, task=quick_task)
    try:
        model = make_agent(config, venv)
        assert model.learning_rate == 0.0005 and model.seed == 5
        assert float(model.action_noise._sigma[0]) == pytest.approx(0.2)
        assert isinstance(model.policy.actor.mu[1], torch.nn.Tanh)
        assert model.learning_starts <= 100 and model.buffer_size <= 1_000_000
    finally:
        venv.close()


# ----------------------------------------------------------------------------- training each algorithm


@pytest.mark.parametrize("algo", list(ACTIONS))
def test_each_algorithm_trains_a_few_steps(agent_config, quick_task, tmp_path: Path, algo: str) -> None:
    if algo == "ppo":
        overrides = ppo_small()
    elif algo == "ars":  # one update: 2 x n_delta candidates, one 3-step episode each
        overrides = [f"agent.total_timesteps={4 * EPISODE}", "agent.hyperparams={n_delta: 2}"]
    elif algo == "trpo":
        overrides = [f"agent.total_timesteps={4 * EPISODE}", "agent.hyperparams={n_steps: 6, batch_size: 6}"]
    else:
        overrides = [f"agent.total_timesteps={4 * EPISODE}", "agent.hyperparams={}"]
    config = agent_config(f"agent.algo={algo}", f"env.action={ACTIONS[algo]}", *overrides)
    run = train_agent(config, output_dir=tmp_path, task=quick_task, progress=False)
    assert run.env_steps == 4 * EPISODE and run.model.num_timesteps == 4 * EPISODE
    assert run.episodes == 4
    assert run.evaluations >= 1 and run.wall_time_s > 0
    rows = read_csv(tmp_path / "episodes.csv")
    assert [int(r["env_step"]) for r in rows] == [3, 6, 9, 12]
    assert all(abs(float(r["global_sparsity"]) - config.env.target_sparsity) < 1e-3 for r in rows)  # budget mode
    state = json.loads(checkpoint_paths(tmp_path)["state"].read_text())
    assert state["num_timesteps"] == 4 * EPISODE and state["episodes"] == 4
    assert checkpoint_paths(tmp_path)["model"].is_file()
    assert checkpoint_paths(tmp_path)["replay_buffer"].is_file() == isinstance(run.model, OffPolicyAlgorithm)
    if run.best is not None:
        assert (tmp_path / "best_model.zip").is_file()
        best = json.loads((tmp_path / "best_episode.json").read_text())
        assert best["return"] == pytest.approx(run.best["return"]) and best["meets_target"]
        assert set(best["layer_sparsities"]) == set(quick_task.profiles)


# ----------------------------------------------------------------------------- checkpoints and resume


def test_interrupt_checkpoints_and_resume_continues_the_step_count(agent_config, quick_task, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    config = agent_config(*ppo_small(4 * EPISODE, "agent.checkpoint_every=6"))
    original = BestEpisodeTracker._on_episode  # the tracker runs after EpisodeCsv in PurlCallback's list

    def interrupt_after_three(self: BestEpisodeTracker, record: dict) -> None:
        original(self, record)
        if self.episodes == 3:  # inside the second rollout: the checkpoint is its start, after two episodes
            raise KeyboardInterrupt

    monkeypatch.setattr(BestEpisodeTracker, "_on_episode", interrupt_after_three)
    with pytest.raises(KeyboardInterrupt):
        train_agent(config, output_dir=tmp_path, task=quick_task, progress=False)
    state = json.loads(checkpoint_paths(tmp_path)["state"].read_text())
    assert state["num_timesteps"] == 2 * EPISODE and state["episodes"] == 2
    monkeypatch.setattr(BestEpisodeTracker, "_on_episode", original)

    run = train_agent(config, output_dir=tmp_path, task=quick_task, progress=False, resume=True)
    assert run.resumed_from == 2 * EPISODE
    assert run.model.num_timesteps == config.agent.total_timesteps == run.env_steps
    assert run.episodes == 4
    assert [int(r["episode"]) for r in read_csv(tmp_path / "episodes.csv")] == [1, 2, 3, 4]
    assert json.loads(checkpoint_paths(tmp_path)["state"].read_text())["num_timesteps"] == 4 * EPISODE


def test_off_policy_resume_restores_the_replay_buffer(agent_config, quick_task, tmp_path: Path) -> None:
    first = agent_config("agent.algo=sac", "agent.hyperparams={}", f"agent.total_timesteps={3 * EPISODE}")
    run = train_agent(first, output_dir=tmp_path, task=quick_task, progress=False)
    assert run.model.replay_buffer.size() == 3 * EPISODE
    more = agent_config("agent.algo=sac", "agent.hyperparams={}", f"agent.total_timesteps={5 * EPISODE}")
    resumed = train_agent(more, output_dir=tmp_path, task=quick_task, progress=False, resume=True)
    assert resumed.model.num_timesteps == 5 * EPISODE
    assert resumed.model.replay_buffer.size() == 5 * EPISODE  # 3 episodes restored + 2 new ones
    assert resumed.episodes == 5


def test_resume_without_checkpoint_starts_fresh(agent_config, quick_task, tmp_path: Path) -> None:
    run = train_agent(agent_config(*ppo_small(2 * EPISODE)), output_dir=tmp_path, task=quick_task,
                      progress=False, resume=True)
    assert run.resumed_from is None and run.model.num_timesteps == 2 * EPISODE


# ----------------------------------------------------------------------------- TensorBoard


def test_tensorboard_event_files_hold_the_expected_tags(agent_config, quick_task, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = agent_config(*ppo_small(4 * EPISODE), "env.accuracy_drop=1.0")  # every episode meets the target
    run = train_agent(config, output_dir=tmp_path, task=quick_task, progress=False, figure_every=2)
    assert run.best is not None
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    expected = {"purl/episode_reward", "purl/final_accuracy", "purl/global_sparsity", "purl/flops"}
    assert expected <= scalars
    assert any(tag.startswith("purl/reward/") for tag in scalars)
    assert {"purl/layer_sparsity_latest", "purl/layer_sparsity_best"} <= set(acc.Tags()["images"])
    rewards = acc.Scalars("purl/episode_reward")
    assert [e.step for e in rewards] == [3, 6, 9, 12]
    assert [e.value for e in rewards] == pytest.approx([float(r["return"])
                                                        for r in read_csv(tmp_path / "episodes.csv")], abs=1e-5)
    assert learning_curve(tmp_path) == [[e.step, pytest.approx(e.value, abs=1e-5)] for e in rewards]


# ----------------------------------------------------------------------------- policy extraction


def test_policy_is_extracted_and_applied_exactly(agent_config, quick_task, tmp_path: Path) -> None:
    from purl.envs import PruningEnv

    config = agent_config("agent.algo=dqn", "env.action=sparsity-discrete", f"agent.total_timesteps={2 * EPISODE}",
                          "agent.hyperparams={}")
    run = train_agent(config, output_dir=tmp_path, task=quick_task, progress=False)
    env = PruningEnv(config, task=quick_task)
    sparsities = policy_sparsities(run.model, env)
    assert sparsities == policy_sparsities(run.model, env)  # deterministic
    model, masks = apply_policy(quick_task, sparsities)
    numels = masks.numels()
    assert set(sparsities) == set(numels)
    assert masks.pruned() == {name: pruned_count(s, numels[name]) for name, s in sparsities.items()}
    assert masks.global_sparsity() == pytest.approx(config.env.target_sparsity, abs=1e-4)
    for layer in masks.layers:  # the weights are really zero where the masks say so
        assert int((layer.weight == 0).sum()) >= masks.pruned()[layer.name]
    assert model is not quick_task.model


def test_apply_policy_rejects_unknown_layers(quick_task) -> None:
    with pytest.raises(PurlError, match="unknown layers"):
        apply_policy(quick_task, {"nope": 0.5})


def test_run_agent_method_returns_a_results_row(agent_config, quick_task, tmp_path: Path) -> None:
    config = agent_config(*ppo_small(2 * EPISODE), "env.target_sparsity=0.5")
    row = agents.run_agent_method(quick_task, config, output_dir=tmp_path, seed=0, progress=False)
    assert row["method"] == "agent" and row["algo"] == "ppo" and row["target_sparsity"] == 0.5
    assert row["achieved_sparsity"] == pytest.approx(0.5, abs=1e-4)
    prefix = {"best-episode": "best_episode", "most-accurate-episode": "most_accurate_episode",
              "best-return-episode": "best_return_episode", "deterministic": "deterministic_policy",
              "prior": "prior"}.get(row["policy_source"])
    if prefix is not None:  # top-accurate-<k> candidates have no column of their own
        assert row["layer_sparsity"] == pytest.approx(row[f"{prefix}_layer_sparsity"])
    assert row["deterministic_policy_layer_sparsity"] is not None and row["best_return_episode_return"] is not None
    assert row["search_env_steps"] == 2 * EPISODE and row["search_episodes"] == 2
    assert row["search_evaluations"] >= 1 and len(row["learning_curve"]) == 2
    for key in ("before_test_top1", "after_test_top1", "before_test_top5", "after_test_top5", "dense_flops",
                "sparse_flops", "compression_ratio", "theoretical_speedup", "collapsed_layers", "wall_time_s",
                "search_wall_time_s", "reward"):
        assert key in row


def test_cell_config_sets_target_threshold_and_overrides(agent_config) -> None:
    base = agent_config()
    spec = MethodSpec(label="agent-sac", method="agent", min_threshold=0.5,
                      kwargs={"agent.algo": "sac", "env": {"reward": "amc"}})
    config = cell_config(base, spec, 0.75)
    assert config.env.target_sparsity == 0.75 and config.constraints.min_threshold == 0.5
    assert config.agent.algo == "sac" and config.env.reward == "amc"
    assert config.task_key() == base.task_key()  # same dense model
    with pytest.raises(ConfigError, match="agent-sac"):
        cell_config(base, MethodSpec(label="agent-sac", method="agent", kwargs={"agent.algoo": "sac"}), 0.5)


# ----------------------------------------------------------------------------- Python API snippet


def test_api_snippet_in_package_docstring_runs(quick_task_config: ExperimentConfig) -> None:
    """The README's Python API example (agents/__init__.py docstring) runs as written, on a fast setting."""
    block = agents.__doc__.split("::", 1)[1].split("\n\n", 1)[1].split("\n\nFor the whole", 1)[0]
    code = "\n".join(line[4:] for line in block.splitlines())
    assert len([line for line in code.splitlines() if line.strip()]) <= 12
    fast = (f'["agent.total_timesteps=6", "cache_dir={quick_task_config.cache_dir}", "pretrain.epochs=3", '
            '"env.val_samples=100", "agent.hyperparams={n_steps: 6, batch_size: 6}"]')
    code, n = re.subn(r'\["agent\.total_timesteps=\d+"\]', fast, code)
    assert n == 1
    scope: dict = {}
    exec(compile(code, "agents-snippet", "exec"), scope)  # noqa: S102 - our own docstring
    masks = scope["masks"]
    assert masks.global_sparsity() == pytest.approx(scope["config"].env.target_sparsity, abs=1e-4)
    assert set(scope["sparsities"]) == set(masks.names)


def test_subproc_workers_build_their_own_task_from_the_cache(agent_config, quick_task, tmp_path: Path) -> None:
    config = agent_config(*ppo_small(2 * EPISODE), "agent.n_envs=2", "agent.vec_env=subproc")
    run = train_agent(config, output_dir=tmp_path, task=quick_task, progress=False)
    assert run.env_steps == 12 and run.episodes == 4  # one 6-step rollout per worker
    assert run.evaluations >= 2  # counted across both workers


def test_prior_relative_gaussian_policies_start_close_to_the_prior(agent_config, quick_task) -> None:
    from purl.agents.algorithms import PRIOR_LOG_STD_INIT, make_agent
    from purl.envs import PruningEnv

    env = PruningEnv(quick_task.config, task=quick_task, action="prior-relative")
    default = make_agent(agent_config("env.action=prior-relative"), env)
    assert float(default.policy.log_std.detach()[0]) == PRIOR_LOG_STD_INIT
    explicit = make_agent(agent_config("env.action=prior-relative", "agent.policy_kwargs={log_std_init: 0.5}"), env)
    assert float(explicit.policy.log_std.detach()[0]) == 0.5
    other = make_agent(agent_config("env.action=sparsity-continuous"), env)
    assert float(other.policy.log_std.detach()[0]) == 0.0  # SB3's own default elsewhere


@pytest.mark.parametrize("algo", ["dqn"])
def test_a_discrete_algorithm_with_the_prior_relative_action_names_that_action(run_cli, tmp_path, algo: str) -> None:
    result = run_cli("train", "--config", "configs/quick.yaml", f"agent.algo={algo}", "agent.hyperparams={}",
                     "--output", tmp_path / "run", "--quiet")
    assert result.rc == 2 and "Traceback" not in result.err
    assert "env.action=prior-relative is continuous" in result.err and "sparsity-continuous" not in result.err
    assert not (tmp_path / "run").exists()  # refused before any work
