"""``agent.warm_start: previous-target``: a grid's agent cell starts from the previous target's finished policy,
for ``agent.warm_start_fraction`` of the budget, and its row names where it started from."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from purl.agents import make_agent
from purl.agents.callbacks import FINAL_MODEL
from purl.agents.warm_start import load_warm_policy, warm_start_source
from purl.compare import ResultsTable
from purl.config import load_config
from purl.envs import PruningEnv
from purl.errors import CheckpointError

QUICK = Path(__file__).resolve().parents[1] / "configs" / "quick.yaml"


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny networks: one intra-op thread."""


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.policy.state_dict().items()}


def test_grid_chains_the_targets(run_cli, fast_agent_overrides: list[str], tmp_path: Path) -> None:
    out = tmp_path / "grid"
    result = run_cli("compare", "--config", QUICK, "-q", "-o", out, *fast_agent_overrides, "compare.methods=[agent]",
                     "compare.sparsities=[0.5, 0.75, 0.9]", "compare.seeds=[0]", "agent.warm_start=previous-target",
                     "agent.warm_start_fraction=0.5")
    assert result.rc == 0, result.err
    rows = {row["target_sparsity"]: row for row in ResultsTable.read(out / "results.csv")}
    assert rows[0.5]["warm_started_from"] is None and rows[0.5]["search_env_steps"] == 12  # the chain's start
    assert rows[0.75]["warm_started_from"] == "agent-s0.5-seed0" and rows[0.75]["search_env_steps"] == 6
    assert rows[0.9]["warm_started_from"] == "agent-s0.75-seed0" and rows[0.9]["search_env_steps"] == 6
    assert all((out / "cells" / f"agent-s{t:g}-seed0" / FINAL_MODEL).is_file() for t in rows)


def test_without_warm_start_every_target_searches_from_scratch(run_cli, fast_agent_overrides: list[str],
                                                               tmp_path: Path) -> None:
    result = run_cli("compare", "--config", QUICK, "-q", "-o", tmp_path, *fast_agent_overrides,
                     "compare.methods=[agent]", "compare.sparsities=[0.5, 0.75]", "compare.seeds=[0]",
                     "agent.warm_start=none")
    assert result.rc == 0, result.err
    rows = ResultsTable.read(tmp_path / "results.csv")
    assert [(r["warm_started_from"], r["search_env_steps"]) for r in rows] == [(None, 12), (None, 12)]


def test_source_is_the_previous_cells_finished_policy(make_config, tmp_path: Path) -> None:
    warm = make_config("agent.warm_start=previous-target")
    assert warm_start_source(warm, None) is None  # the first target of a chain, or a one-cell run
    assert warm_start_source(warm, tmp_path) is None  # the previous cell did not finish its search
    (tmp_path / FINAL_MODEL).write_bytes(b"")
    assert warm_start_source(warm, tmp_path) == tmp_path / FINAL_MODEL
    assert warm_start_source(make_config("agent.warm_start=none"), tmp_path) is None


def _agent(task, config, seed: int):
    env = PruningEnv(config, task=task, device="cpu")
    return make_agent(config, env, seed=seed), env


def test_load_puts_the_finished_policy_in_a_fresh_agent(quick_task, quick_task_config, tmp_path: Path) -> None:
    finished, env_a = _agent(quick_task, quick_task_config, seed=0)
    with torch.no_grad():
        for p in finished.policy.parameters():
            p.add_(0.5)  # as if trained: not what a fresh agent of any seed holds
    finished.save(tmp_path / FINAL_MODEL)
    fresh, env_b = _agent(quick_task, quick_task_config, seed=1)
    assert any(not torch.equal(v, _params(finished)[k]) for k, v in _params(fresh).items())
    load_warm_policy(fresh, tmp_path / FINAL_MODEL)
    assert all(torch.equal(v, _params(finished)[k]) for k, v in _params(fresh).items())
    env_a.close(), env_b.close()


def test_train_agent_starts_from_the_warm_policy(quick_task, quick_task_config, tmp_path: Path) -> None:
    """With a learning rate of 0 the search leaves the policy as it began: the warm one, not a fresh one."""
    from purl.agents import train_agent

    config = load_config(QUICK, [f"cache_dir={quick_task_config.cache_dir}", "pretrain.epochs=3", "device=cpu",
                                 "env.val_samples=100", "agent.total_timesteps=6", "agent.progress_bar=false",
                                 "agent.hyperparams={n_steps: 6, batch_size: 6, learning_rate: 0.0}"])
    source, env = _agent(quick_task, config, seed=0)
    with torch.no_grad():
        for p in source.policy.parameters():
            p.add_(0.5)
    source.save(tmp_path / FINAL_MODEL)
    env.close()
    warm = train_agent(config, output_dir=tmp_path / "warm", task=quick_task, progress=False, seed=3,
                       warm_start=tmp_path / FINAL_MODEL)
    cold = train_agent(config, output_dir=tmp_path / "cold", task=quick_task, progress=False, seed=3)
    assert all(torch.equal(v, _params(source)[k]) for k, v in _params(warm.model).items())
    assert any(not torch.equal(v, _params(source)[k]) for k, v in _params(cold.model).items())
    assert (tmp_path / "warm" / FINAL_MODEL).is_file()


def test_a_policy_of_another_shape_is_one_clear_error(quick_task, quick_task_config, tmp_path: Path) -> None:
    other = load_config(QUICK, [f"cache_dir={quick_task_config.cache_dir}", "pretrain.epochs=3", "device=cpu",
                                "agent.policy_kwargs={net_arch: [8]}"])
    finished, env_a = _agent(quick_task, other, seed=0)
    finished.save(tmp_path / FINAL_MODEL)
    fresh, env_b = _agent(quick_task, quick_task_config, seed=0)
    with pytest.raises(CheckpointError, match="cannot warm-start from .*same algorithm, policy and model"):
        load_warm_policy(fresh, tmp_path / FINAL_MODEL)
    env_a.close(), env_b.close()


def test_a_remote_executor_is_refused_before_any_work(run_cli, fast_agent_overrides: list[str],
                                                      tmp_path: Path) -> None:
    result = run_cli("compare", "--config", QUICK, "-q", "-o", tmp_path, *fast_agent_overrides,
                     "compare.methods=[agent]", "compare.executor=ray", "agent.warm_start=previous-target")
    assert result.rc != 0
    assert "compare.executor local" in result.err and "Traceback" not in result.err
    assert not (tmp_path / "results.csv").exists()
