"""Exact resume of an interrupted agent search (issue #22, "exact resume"): a search stopped by SIGINT/SIGTERM
(``purl train``) or SIGKILL (a ``purl compare`` agent cell) and resumed ends with the numbers of an
uninterrupted run: same results, same episodes (none twice), same step count, a total wall time that counts
every session. Where an exact resume is impossible the search restarts from scratch and says so in one line.

In process (fast): every algorithm family, both envs, two envs, subprocess envs, interrupted by a
KeyboardInterrupt at a chosen step. End to end: real signals to real ``purl`` processes.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from purl.agents import train_agent
from purl.agents.callbacks import PurlCallback, checkpoint_paths
from purl.config import ExperimentConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "configs" / "quick.yaml"
KEYS = ("after_test_top1", "layer_sparsity", "search_env_steps", "search_episodes", "search_evaluations",
        "achieved_sparsity", "policy_source", "best_episode_return", "learning_curve")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny networks: one intra-op thread."""


def _episodes(out: Path) -> list[tuple[int, int, str, str]]:
    with (out / "episodes.csv").open(newline="") as handle:
        return [(int(r["episode"]), int(r["env_step"]), r["return"], r["accuracy"]) for r in csv.DictReader(handle)]


def _no_duplicates(rows: list[tuple[int, int, str, str]]) -> None:
    numbers = [row[0] for row in rows]
    assert numbers == list(range(1, len(numbers) + 1)), numbers  # every episode once, in order


# ---------------------------------------------------------------------------- in process, every algorithm


@pytest.fixture
def config_for(quick_task_config: ExperimentConfig):
    def make(*overrides: str) -> ExperimentConfig:
        return load_config(QUICK, [f"cache_dir={quick_task_config.cache_dir}", "pretrain.epochs=3", "device=cpu",
                                   "env.val_samples=100", "agent.progress_bar=false", "agent.checkpoint_every=3",
                                   "agent.total_timesteps=24", "agent.hyperparams={n_steps: 6, batch_size: 6}",
                                   *overrides])

    return make


def _search(run, out: Path) -> dict:  # noqa: ANN001
    return {"steps": run.env_steps, "episodes": run.episodes, "evaluations": run.evaluations,
            "best": run.best, "best_return": run.best_return, "best_accuracy": run.best_accuracy,
            "top_accurate": run.top_accurate, "rows": _episodes(out),
            "params": [p.detach().clone() for p in run.model.policy.parameters()]}


def _strip_times(value):  # noqa: ANN001, ANN202 - wall times are the time spent, not part of the search
    if isinstance(value, dict):
        return {k: _strip_times(v) for k, v in value.items() if k != "wall_time_s"}
    if isinstance(value, list):
        return [_strip_times(v) for v in value]
    return value


def _interrupted_at(stop: int, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN202
    original = PurlCallback._on_step

    def interrupt(self: PurlCallback) -> bool:
        keep = original(self)
        if self.model.num_timesteps == stop:
            raise KeyboardInterrupt
        return keep

    monkeypatch.setattr(PurlCallback, "_on_step", interrupt)
    return original


CASES = {
    "ppo": ([], 14),
    "ppo-rollout-not-whole-episodes": (["agent.hyperparams={n_steps: 4, batch_size: 4}"], 14),
    "ppo-two-envs": (["agent.n_envs=2", "agent.total_timesteps=48", "agent.hyperparams={n_steps: 6, batch_size: 12}"],
                     18),
    "a2c": (["agent.algo=a2c", "agent.hyperparams={}"], 10),
    "sac": (["agent.algo=sac", "env.action=sparsity-continuous", "agent.hyperparams={learning_starts: 5}"], 14),
    "td3": (["agent.algo=td3", "env.action=sparsity-continuous", "agent.hyperparams={learning_starts: 5}"], 13),
    "dqn": (["agent.algo=dqn", "env.action=sparsity-discrete",
             "agent.hyperparams={learning_starts: 5, target_update_interval: 4}"], 14),
    "channel": (["prune.granularity=channel", "prune.budget_metric=flops", "env.target_sparsity=0.5"], 15),
}


@pytest.mark.parametrize("case", list(CASES))
def test_interrupted_search_resumes_to_the_uninterrupted_numbers(case: str, config_for, quick_task, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    overrides, stop = CASES[case]
    config = config_for(*overrides)
    reference = _search(train_agent(config, output_dir=tmp_path / "ref", task=quick_task, progress=False),
                        tmp_path / "ref")
    original = _interrupted_at(stop, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train_agent(config, output_dir=tmp_path / "run", task=quick_task, progress=False)
    state = json.loads(checkpoint_paths(tmp_path / "run")["state"].read_text())
    assert state["num_timesteps"] < stop and state["exact"]["continuable"]  # the start of the rollout under way
    assert "search: stopped at env step" in capsys.readouterr().err
    monkeypatch.setattr(PurlCallback, "_on_step", original)
    resumed = _search(train_agent(config, output_dir=tmp_path / "run", task=quick_task, progress=False, resume=True),
                      tmp_path / "run")
    assert f"from its checkpoint at env step {state['num_timesteps']}" in capsys.readouterr().err
    for key in ("steps", "episodes", "evaluations", "rows"):
        assert resumed[key] == reference[key], key
    for key in ("best", "best_return", "best_accuracy", "top_accurate"):
        assert _strip_times(resumed[key]) == _strip_times(reference[key]), key
    assert all(torch.equal(a, b) for a, b in zip(resumed["params"], reference["params"], strict=True))
    _no_duplicates(resumed["rows"])


def test_subprocess_envs_resume_exactly(config_for, quick_task, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    config = config_for("agent.n_envs=2", "agent.vec_env=subproc", "agent.total_timesteps=36",
                        "agent.hyperparams={n_steps: 6, batch_size: 12}")
    reference = _search(train_agent(config, output_dir=tmp_path / "ref", task=quick_task, progress=False),
                        tmp_path / "ref")
    original = _interrupted_at(16, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train_agent(config, output_dir=tmp_path / "run", task=quick_task, progress=False)
    monkeypatch.setattr(PurlCallback, "_on_step", original)
    resumed = _search(train_agent(config, output_dir=tmp_path / "run", task=quick_task, progress=False, resume=True),
                      tmp_path / "run")
    assert (resumed["steps"], resumed["evaluations"], resumed["rows"]) == \
        (reference["steps"], reference["evaluations"], reference["rows"])


@pytest.mark.parametrize("damage", ["old-checkpoint", "gsde"])
def test_a_search_that_cannot_resume_exactly_restarts_from_scratch_and_says_so(
        damage: str, config_for, quick_task, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    extra = ["agent.hyperparams={n_steps: 6, batch_size: 6, use_sde: true}"] if damage == "gsde" else []
    config = config_for(*extra)
    reference = _search(train_agent(config, output_dir=tmp_path / "ref", task=quick_task, progress=False),
                        tmp_path / "ref")
    original = _interrupted_at(14, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train_agent(config, output_dir=tmp_path / "run", task=quick_task, progress=False)
    monkeypatch.setattr(PurlCallback, "_on_step", original)
    paths = checkpoint_paths(tmp_path / "run")
    if damage == "old-checkpoint":  # as an earlier PuRL wrote it: no random states
        state = json.loads(paths["state"].read_text())
        del state["exact"]
        paths["state"].write_text(json.dumps(state))
        paths["exact"].unlink()
    capsys.readouterr()
    resumed = _search(train_agent(config, output_dir=tmp_path / "run", task=quick_task, progress=False, resume=True),
                      tmp_path / "run")
    lines = [line for line in capsys.readouterr().err.splitlines() if "restarting it from scratch" in line]
    assert len(lines) == 1 and "cannot resume the search" in lines[0], lines
    assert ("earlier PuRL" in lines[0]) == (damage == "old-checkpoint") and ("gSDE" in lines[0]) == (damage == "gsde")
    assert (resumed["steps"], resumed["episodes"], resumed["rows"]) == \
        (reference["steps"], reference["episodes"], reference["rows"])


def test_a_finished_search_resumed_is_reused_as_it_ended(config_for, quick_task, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """E.g. a compare cell that failed after its search: the re-run reuses the search, random states included."""
    config = config_for()
    train_agent(config, output_dir=tmp_path, task=quick_task, progress=False)
    after_first = torch.get_rng_state()
    torch.manual_seed(123)  # whatever ran in between
    again = train_agent(config, output_dir=tmp_path, task=quick_task, progress=False, resume=True)
    assert again.env_steps == 24 and "the search is finished, reusing it" in capsys.readouterr().err
    assert torch.equal(torch.get_rng_state(), after_first)  # selection and fine-tuning draw as after the search


# ---------------------------------------------------------------------------- end to end, real signals


def _env(tmp_path: Path) -> dict[str, str]:
    return os.environ | {"HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}


def _wait_for_rows(proc: subprocess.Popen, episodes: Path, rows: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if len(episodes.read_text().splitlines()) > rows:
                return
        except OSError:
            pass
        time.sleep(0.02)
    assert proc.poll() is None, "the search ended before it could be interrupted"
    pytest.fail(f"no {rows} episodes within {timeout}s")


def _default_sigint() -> None:
    """In the child: Ctrl-C's default disposition. A suite started in the background by a non-interactive shell
    inherits SIGINT ignored, and Python then never raises KeyboardInterrupt: the test would not test anything."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def train_argv(fast_agent_overrides: list[str], quick_task) -> list[str]:  # noqa: ARG001 - quick_task: the cache
    """A ``purl train`` of 25 PPO rollouts of 8 episodes, its dense model in the session's cache."""
    return [sys.executable, "-m", "purl.cli.main", "train", "--config", str(QUICK), "--quiet",
            *fast_agent_overrides, "agent.total_timesteps=600", "agent.hyperparams={n_steps: 24, batch_size: 24}",
            "agent.checkpoint_every=100000"]


@pytest.fixture
def train_reference(train_argv: list[str], tmp_path: Path) -> dict:
    out = tmp_path / "reference"
    proc = subprocess.run([*train_argv, "-o", str(out)], env=_env(tmp_path), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    return {"row": json.loads((out / "results.json").read_text()), "episodes": _episodes(out)}


@pytest.mark.parametrize("signals", [[(signal.SIGINT, 60)], [(signal.SIGTERM, 150)],
                                     [(signal.SIGINT, 40), (signal.SIGTERM, 120)]],
                         ids=["sigint", "sigterm", "sigint-then-sigterm"])
def test_purl_train_interrupted_and_resumed_matches_an_uninterrupted_run(signals, train_argv: list[str],
                                                                         train_reference: dict,
                                                                         tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = [*train_argv, "-o", str(out)]
    for index, (signum, rows) in enumerate(signals):
        proc = subprocess.Popen(argv + (["--resume"] if index else []), env=_env(tmp_path), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
        _wait_for_rows(proc, out / "episodes.csv", rows)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == (130 if signum == signal.SIGINT else 143), err
        assert "Traceback" not in err and "--resume" in err and "search: stopped at env step" in err, err
        state = json.loads(checkpoint_paths(out)["state"].read_text())
        assert state["exact"]["continuable"] and state["num_timesteps"] % 24 == 0  # a rollout start
        _no_duplicates(_episodes(out))
    resumed = subprocess.run(argv + ["--resume"], env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "continuing exactly" in resumed.stderr and "restarting" not in resumed.stderr
    row = json.loads((out / "results.json").read_text())
    for key in KEYS:
        assert row[key] == train_reference["row"][key], key
    assert row["search_env_steps"] == 600  # 25 whole rollouts: the budget, neither more nor less
    assert _episodes(out) == train_reference["episodes"]
    assert row["wall_time_s"] >= row["search_wall_time_s"] > 0  # every session counted in both
    assert row["earlier_sessions_wall_time_s"] > 0


def test_sigkilled_compare_agent_cell_resumes_to_the_uninterrupted_numbers(fast_agent_overrides: list[str],
                                                                           quick_task, tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "purl.cli.main", "compare", "--config", str(QUICK), "--quiet",
            *fast_agent_overrides, "agent.total_timesteps=600", "agent.hyperparams={n_steps: 24, batch_size: 24}",
            "agent.checkpoint_every=48", "compare.methods=[agent]", "compare.sparsities=[0.5]", "compare.seeds=[0]"]
    reference = subprocess.run([*argv, "-o", str(tmp_path / "reference")], env=_env(tmp_path), capture_output=True,
                               text=True, timeout=600)
    assert reference.returncode == 0, reference.stderr
    out = tmp_path / "grid"
    cell = out / "cells" / "agent-s0.5-seed0"
    proc = subprocess.Popen([*argv, "-o", str(out)], env=_env(tmp_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _wait_for_rows(proc, cell / "episodes.csv", 100)
    proc.kill()  # SIGKILL: no handler runs; the last periodic checkpoint is all there is
    proc.wait(timeout=60)
    state = json.loads(checkpoint_paths(cell)["state"].read_text())
    assert 0 < state["num_timesteps"] < 600 and state["exact"]["continuable"]
    again = subprocess.run([*argv, "-o", str(out)], env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    said = [line for line in (again.stdout + again.stderr).splitlines() if "resuming the search" in line]
    assert len(said) == 1 and f"'{cell}'" in said[0] and f"env step {state['num_timesteps']} of 600" in said[0], said
    from purl.compare.cells import ResultsTable

    row, ref = ResultsTable(out / "results.csv").rows[0], ResultsTable(tmp_path / "reference" / "results.csv").rows[0]
    for key in ("after_test_top1", "layer_sparsity", "search_env_steps", "search_episodes", "search_evaluations",
                "achieved_sparsity", "policy_source", "learning_curve"):
        assert row[key] == ref[key], key
    assert _episodes(cell) == _episodes(tmp_path / "reference" / "cells" / "agent-s0.5-seed0")
    assert row["wall_time_s"] >= row["search_wall_time_s"]
