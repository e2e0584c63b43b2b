"""End-to-end tests of ``purl train`` (run in process through ``purl.cli.main.main``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from purl.checkpoint import load_checkpoint
from purl.config import ExperimentConfig

QUICK = Path(__file__).resolve().parents[1] / "configs" / "quick.yaml"
ROW_FIELDS = [
    "method", "algo", "reward", "target_sparsity", "achieved_sparsity", "before_test_top1", "before_test_top5",
    "after_test_top1", "after_test_top5", "dense_test_top1", "dense_flops", "sparse_flops", "compression_ratio",
    "theoretical_speedup", "collapsed_layers", "layer_sparsity", "wall_time_s", "search_episodes",
    "search_env_steps", "search_evaluations", "search_wall_time_s", "policy_source", "checkpoint",
]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny networks: every test here runs with one intra-op thread (see conftest's ``one_thread``)."""


@pytest.fixture
def fast(quick_task_config: ExperimentConfig) -> list[str]:
    """Overrides: the session's cached quick task, a 100-sample reward split, 5 fine-tuning steps, 6 PPO steps."""
    return [f"cache_dir={quick_task_config.cache_dir}", "pretrain.epochs=3", "env.val_samples=100",
            "finetune.max_steps=5", "agent.total_timesteps=6", "agent.hyperparams={n_steps: 6, batch_size: 6}",
            "agent.checkpoint_every=3"]


def test_train_writes_results_checkpoint_and_logs(run_cli, fast: list[str], quick_task, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_cli("train", "--config", QUICK, "--output", out, "--quiet", "--device", "cpu", *fast)
    assert result.rc == 0, result.err
    row = json.loads((out / "results.json").read_text())
    for field in ROW_FIELDS:
        assert field in row, field
    assert row["command"] == "train" and row["method"] == "agent" and row["algo"] == "ppo"
    assert row["achieved_sparsity"] == pytest.approx(0.9, abs=1e-4)
    assert row["search_env_steps"] == 6 and row["search_episodes"] == 2
    for name in ("config.yaml", "episodes.csv", "checkpoints/last.zip", "checkpoints/last.json"):
        assert (out / name).is_file(), name
    assert (out / "best_episode.json").is_file() == (row["best_episode_return"] is not None)
    assert list((out / "tb").glob("events.out.tfevents.*"))
    payload = load_checkpoint(out / "pruned.pt")
    masks = payload["masks"]
    pruned = sum(int((~m).sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    assert pruned / total == pytest.approx(row["achieved_sparsity"])
    assert "test top-1" in result.out and "search:" in result.out and "results:" in result.out

    # --resume with a larger budget continues the same run (PPO: one more 6-step rollout)
    more = [*fast, "agent.total_timesteps=12"]
    again = run_cli("train", "--config", QUICK, "--output", out, "--quiet", "--device", "cpu", "--resume", *more)
    assert again.rc == 0, again.err
    row = json.loads((out / "results.json").read_text())
    assert row["search_env_steps"] == 12 and row["search_episodes"] == 4


@pytest.mark.parametrize(("override", "named"), [
    ("agent.algo=ppo9", "ppo9"),
    ("agent.hyperparams={n_stepz: 4}", "n_stepz"),
    ("agent.policy_kwargs={net_arc: [4]}", "net_arc"),
])
def test_bad_agent_settings_exit_2_with_one_line(run_cli, tmp_path: Path, override: str, named: str) -> None:
    result = run_cli("train", "--output", tmp_path / "bad", "--quiet", f"cache_dir={tmp_path / 'cache'}", override)
    assert result.rc == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and lines[0].startswith("purl train: error:")
    assert not (tmp_path / "cache").exists()  # failed before building (pre-training) the task


def test_dqn_with_continuous_actions_exits_2(run_cli, tmp_path: Path) -> None:
    result = run_cli("train", "--output", tmp_path / "bad", "--quiet", f"cache_dir={tmp_path / 'cache'}",
                     "agent.algo=dqn", "env.action=sparsity-continuous")
    assert result.rc == 2
    assert "sparsity-discrete" in result.err and len(result.err.strip().splitlines()) == 1


def test_list_agents_shows_the_algorithms(run_cli) -> None:
    result = run_cli("list", "agents")
    assert result.rc == 0
    for name in ("ppo", "a2c", "dqn", "sac", "td3", "ddpg"):
        assert f"  {name}" in result.out
