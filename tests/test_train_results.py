"""``purl train``'s results.json and output: sparsity-only ``meets_target``, filled ``best_episode_*``, the reported
allocation next to the deterministic policy, one progress-bar style, and unwritable output folders."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

QUICK = Path(__file__).resolve().parents[1] / "configs" / "quick.yaml"


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny networks: one intra-op thread."""


@pytest.fixture
def fast(fast_agent_overrides: list[str]) -> list[str]:
    return fast_agent_overrides


PREFIXES = ("best_search_episode", "deterministic_policy", "prior", "best_episode", "most_accurate_episode",
            "best_return_episode")


def test_meets_target_is_the_sparsity_rule_and_best_episode_is_filled(run_cli, fast: list[str], quick_task,
                                                                      tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_cli("train", "--config", QUICK, "--output", out, "--quiet", *fast)
    assert result.rc == 0, result.err
    row = json.loads((out / "results.json").read_text())
    assert row["target_accuracy"] is None
    for prefix in PREFIXES:  # every allocation here is at the target sparsity (budget mode)
        assert row[f"{prefix}_meets_target"] is True, prefix
        assert row[f"{prefix}_meets_accuracy_target"] is None, prefix
    for key in ("return", "accuracy", "global_sparsity", "layer_sparsity"):
        assert row[f"best_episode_{key}"] is not None, key
    assert (out / "best_episode.json").is_file()


def test_an_explicit_accuracy_target_is_a_separate_field(run_cli, fast: list[str], quick_task,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_cli("train", "--config", QUICK, "--output", out, "--quiet", *fast, "env.target_accuracy=1.0")
    assert result.rc == 0, result.err
    row = json.loads((out / "results.json").read_text())
    assert row["target_accuracy"] == 1.0
    assert row["deterministic_policy_meets_target"] is True
    assert row["deterministic_policy_meets_accuracy_target"] is (row["deterministic_policy_accuracy"] >= 1.0)


def test_reported_allocation_and_deterministic_policy_are_both_reported(run_cli, fast: list[str], quick_task,
                                                                        tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_cli("train", "--config", QUICK, "--output", out, "--quiet", *fast)
    assert result.rc == 0, result.err
    row = json.loads((out / "results.json").read_text())
    kind = row["reported_allocation"]
    assert kind in ("best-search-episode", "deterministic-policy", "prior")
    assert (kind == "best-search-episode") == (row["policy_source"] not in ("prior", "deterministic"))
    assert row["deterministic_policy_accuracy"] is not None and row["best_search_episode_accuracy"] is not None
    if kind == "best-search-episode":
        assert row["best_search_episode_source"] == row["policy_source"]
        assert row["layer_sparsity"] == pytest.approx(row["best_search_episode_layer_sparsity"])
    assert "trained policy, run deterministically" in result.out
    assert f"{100 * row['deterministic_policy_accuracy']:.2f}%" in result.out
    assert f"{100 * row['best_search_episode_accuracy']:.2f}%" in result.out


def test_train_uses_only_tqdm_progress_bars(run_cli, fast: list[str], quick_task, tmp_path: Path) -> None:
    result = run_cli("train", "--config", QUICK, "--output", tmp_path / "run", *fast, "agent.progress_bar=true")
    assert result.rc == 0, result.err
    assert "━" not in result.out and "it/s" not in result.out  # SB3's rich bar wrote to stdout
    assert "search" in result.err and "step" in result.err  # tqdm, stderr


def test_unwritable_output_folder_fails_before_any_work(run_cli, fast: list[str], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import purl.task

    def refuse(*args, **kwargs):  # noqa: ANN002, ANN003 - as a read-only folder would (root ignores chmod)
        raise PermissionError(13, "Permission denied")

    def never(*args, **kwargs):  # noqa: ANN002, ANN003
        raise AssertionError("work started")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    monkeypatch.setattr(purl.task, "build_task", never)
    result = run_cli("train", "--config", QUICK, "--output", tmp_path / "ro", "--quiet", *fast)
    assert result.rc == 2 and "Traceback" not in result.err
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot write to output folder" in lines[0] and "Permission denied" in lines[0]


def test_a_late_write_failure_is_one_line(run_cli, fast: list[str], quick_task, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import purl.agents.run as agent_run

    def fail(*args, **kwargs):  # noqa: ANN002, ANN003
        raise OSError(28, "No space left on device", str(tmp_path / "run" / "pruned.pt"))

    monkeypatch.setattr(agent_run, "train_and_save", fail)
    result = run_cli("train", "--config", QUICK, "--output", tmp_path / "run", "--quiet", *fast)
    assert result.rc == 2 and "Traceback" not in result.err
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "No space left on device" in lines[0] and "pruned.pt" in lines[0]
