"""``purl train --resume`` is honest: a damaged or foreign checkpoint is one error line (nothing overwritten),
and an interrupted + resumed search spends exactly its budget of env steps."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from purl.agents import train_agent
from purl.agents.callbacks import PurlCallback, checkpoint_paths
from purl.config import ExperimentConfig, load_config
from purl.errors import CheckpointError

QUICK = Path(__file__).resolve().parents[1] / "configs" / "quick.yaml"
EPISODE = 3  # steps per episode of the quick task's MLP


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny networks: one intra-op thread."""


@pytest.fixture
def fast(fast_agent_overrides: list[str]) -> list[str]:
    """The conftest's seconds-long train, checkpointing every 3 steps."""
    return [*fast_agent_overrides, "agent.checkpoint_every=3"]


@pytest.fixture
def finished(run_cli, fast: list[str], quick_task, tmp_path: Path) -> Path:
    """A finished ``purl train`` folder."""
    out = tmp_path / "run"
    result = run_cli("train", "--config", QUICK, "--output", out, "--quiet", *fast)
    assert result.rc == 0, result.err
    return out


def _fingerprint(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in ("results.json", "pruned.pt", "config.yaml")}


def _one_line_error(result) -> str:  # noqa: ANN001
    assert result.rc == 2, result.err
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.err, result.err
    return lines[0]


@pytest.mark.parametrize("damage", ["corrupt", "missing", "incomplete", "no-model"])
def test_damaged_checkpoint_is_one_error_line_and_overwrites_nothing(run_cli, fast: list[str], finished: Path,
                                                                     damage: str) -> None:
    paths = checkpoint_paths(finished)
    before = _fingerprint(finished)
    if damage == "corrupt":
        paths["state"].write_text('{"num_timesteps": 1')
    elif damage == "missing":
        paths["state"].unlink()
    elif damage == "incomplete":
        state = json.loads(paths["state"].read_text())
        del state["best_accuracy"], state["top_accurate"]
        paths["state"].write_text(json.dumps(state))
    else:
        paths["model"].unlink()
    result = run_cli("train", "--config", QUICK, "--output", finished, "--quiet", "--resume", *fast)
    line = _one_line_error(result)
    assert "cannot resume" in line and "without --resume" in line
    assert ("last.json" in line) == (damage != "no-model")
    assert _fingerprint(finished) == before


def test_resume_without_any_checkpoint_is_an_error(run_cli, fast: list[str], tmp_path: Path) -> None:
    result = run_cli("train", "--config", QUICK, "--output", tmp_path / "new", "--quiet", "--resume", *fast)
    assert "holds no checkpoint" in _one_line_error(result)


def test_resume_with_another_config_names_the_differing_keys(run_cli, fast: list[str], finished: Path) -> None:
    before = _fingerprint(finished)
    result = run_cli("train", "--config", QUICK, "--output", finished, "--quiet", "--resume", *fast,
                     "env.reward=amc", "agent.hyperparams.learning_rate=0.01")
    line = _one_line_error(result)
    assert "different config" in line and "env.reward" in line and "agent.hyperparams.learning_rate" in line
    seed = run_cli("train", "--config", QUICK, "--output", finished, "--quiet", "--resume", "--seed", "5", *fast)
    assert "seed" in _one_line_error(seed)
    assert _fingerprint(finished) == before


def test_resume_of_an_intact_run_reports_the_same_result(run_cli, fast: list[str], finished: Path) -> None:
    first = json.loads((finished / "results.json").read_text())
    result = run_cli("train", "--config", QUICK, "--output", finished, "--quiet", "--resume", *fast,
                     "agent.checkpoint_every=5")  # checkpointing may change on resume
    assert result.rc == 0, result.err
    again = json.loads((finished / "results.json").read_text())
    for key in ("policy_source", "after_test_top1", "search_env_steps", "search_episodes", "best_episode_return"):
        assert again[key] == first[key], key


def test_budget_below_the_checkpoint_steps_is_an_error(agent_config_factory, quick_task, tmp_path: Path) -> None:
    train_agent(agent_config_factory(12), output_dir=tmp_path, task=quick_task, progress=False)
    with pytest.raises(CheckpointError, match="already holds 12 env steps"):
        train_agent(agent_config_factory(6), output_dir=tmp_path, task=quick_task, progress=False, resume=True)


@pytest.fixture
def agent_config_factory(fast: list[str]):
    def make(total: int, *extra: str) -> ExperimentConfig:
        return load_config(QUICK, [*fast, "agent.progress_bar=false", f"agent.total_timesteps={total}", *extra])

    return make


@pytest.mark.parametrize("stop", [14, 16])  # at an episode boundary / mid-episode, both mid-rollout
def test_interrupted_and_resumed_search_spends_exactly_its_budget(agent_config_factory, quick_task, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch, stop: int) -> None:
    config = agent_config_factory(24)  # 4 rollouts of 6 steps; SB3 alone would resume to 14 + 2 x 6 = 26
    original = PurlCallback._on_step

    def interrupt(self: PurlCallback) -> bool:
        keep_going = original(self)
        if self.model.num_timesteps == stop:
            raise KeyboardInterrupt
        return keep_going

    monkeypatch.setattr(PurlCallback, "_on_step", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train_agent(config, output_dir=tmp_path, task=quick_task, progress=False)
    # the checkpoint is the start of the rollout under way (an exact point: SB3 cannot resume inside a rollout)
    assert json.loads(checkpoint_paths(tmp_path)["state"].read_text())["num_timesteps"] == stop - stop % 6
    monkeypatch.setattr(PurlCallback, "_on_step", original)

    run = train_agent(config, output_dir=tmp_path, task=quick_task, progress=False, resume=True)
    assert run.env_steps == run.model.num_timesteps == config.agent.total_timesteps
    with (tmp_path / "episodes.csv").open(newline="") as handle:
        steps = [int(row["env_step"]) for row in csv.DictReader(handle)]
    assert max(steps) <= config.agent.total_timesteps and steps == sorted(steps)
    assert json.loads(checkpoint_paths(tmp_path)["state"].read_text())["num_timesteps"] == 24


def test_uninterrupted_run_still_learns_from_its_last_rollout(agent_config_factory, quick_task,
                                                              tmp_path: Path) -> None:
    """The budget stop does not cut a rollout that ends exactly at the budget (SB3 updates on it)."""
    run = train_agent(agent_config_factory(12), output_dir=tmp_path, task=quick_task, progress=False)
    assert run.env_steps == 12
    assert run.model._n_updates == 2 * run.model.n_epochs  # two rollouts, each learnt from


def test_channel_agent_interrupted_and_resumed_spends_exactly_its_budget(agent_config_factory, quick_task,
                                                                         tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The same exact-budget resume at channel granularity; the checkpointed best episodes keep their keep plan."""
    config = agent_config_factory(24, "prune.granularity=channel", "prune.budget_metric=flops",
                                  "env.target_sparsity=0.5")
    original = PurlCallback._on_step

    def interrupt(self: PurlCallback) -> bool:
        keep_going = original(self)
        if self.model.num_timesteps == 15:
            raise KeyboardInterrupt
        return keep_going

    monkeypatch.setattr(PurlCallback, "_on_step", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train_agent(config, output_dir=tmp_path, task=quick_task, progress=False)
    monkeypatch.setattr(PurlCallback, "_on_step", original)
    run = train_agent(config, output_dir=tmp_path, task=quick_task, progress=False, resume=True)
    assert run.env_steps == run.model.num_timesteps == 24
    state = json.loads(checkpoint_paths(tmp_path)["state"].read_text())
    assert state["num_timesteps"] == 24 and state["best_accuracy"]["channel_keep"]
    assert run.best_accuracy is not None and set(run.best_accuracy["channel_keep"]) == {"fc1", "fc2"}  # MLP groups
