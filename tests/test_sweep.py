"""Tests of sweeps (``purl train --grid ... --seeds ...``, :mod:`agents.sweep`): a sweep is a compare grid of agents.

Same results.csv, summary.md, resume and task as ``purl compare``; grid syntax, labels and errors.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from purl.agents.sweep import GridAxis, parse_grid, point_labels, split_values, sweep_config
from purl.config import load_config
from purl.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "configs" / "quick.yaml"
FAST = ["pretrain.epochs=3", "agent.total_timesteps=48", "finetune.max_steps=3", "env.val_samples=64",
        "agent.hyperparams={n_steps: 24, batch_size: 24, n_epochs: 1}", "agent.checkpoint_every=24"]
GRID = ["--grid", "env.reward=purl,amc"]
CELLS = ["reward-amc-s0.9-seed0", "reward-amc-s0.9-seed1", "reward-purl-s0.9-seed0", "reward-purl-s0.9-seed1"]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The module's local sweep: argv, output folder, rc and its results.csv rows."""
    from purl.cli.main import main

    root = tmp_path_factory.mktemp("sweep")
    out, cache = root / "out", root / "cache"
    argv = ["train", "-c", str(QUICK), "-q", "--device", "cpu", "-o", str(out), f"cache_dir={cache}", *FAST,
            *GRID, "--seeds", "0", "1"]
    ray_before = "ray" in sys.modules
    rc = main(argv)
    rows = read_csv(out / "results.csv") if (out / "results.csv").is_file() else []
    return {"argv": argv, "out": out, "cache": cache, "rc": rc, "rows": rows,
            "imported_ray": not ray_before and "ray" in sys.modules}


def test_sweep_is_a_compare_grid_with_one_results_table_and_report(local_sweep: dict) -> None:
    out: Path = local_sweep["out"]
    assert local_sweep["rc"] == 0
    assert not local_sweep["imported_ray"]  # the local path never imports Ray
    assert sorted(p.name for p in (out / "cells").iterdir()) == CELLS
    for cell in CELLS:
        assert list((out / "cells" / cell / "tb").glob("events.out.tfevents.*")), cell
        assert (out / "cells" / cell / "checkpoints" / "last.zip").is_file(), cell
    rows = local_sweep["rows"]
    assert [(r["label"], r["seed"]) for r in rows] == [("reward-purl", "0"), ("reward-amc", "0"),
                                                      ("reward-purl", "1"), ("reward-amc", "1")]
    assert all(r["status"] == "ok" and r["method"] == "agent" and not r["error"] for r in rows)
    assert all(float(r["achieved_sparsity"]) == pytest.approx(0.9, abs=1e-4) for r in rows)
    assert (out / "summary.md").is_file() and not (out / "sweep.csv").exists()
    summary = json.loads((out / "results.json").read_text())
    assert summary["command"] == "sweep" and summary["cells"] == 4 and summary["failed_cells"] == 0
    saved = load_config(out / "config.yaml")
    assert [(m.label, m.kwargs) for m in saved.compare.method_specs()] == [
        ("reward-purl", {"env.reward": "purl"}), ("reward-amc", {"env.reward": "amc"})]


def test_rerun_resumes_like_compare(local_sweep: dict, run_cli) -> None:
    again = run_cli(*local_sweep["argv"])
    assert again.rc == 0, again.err
    assert "resuming: 4 of 4 cells already finished" in again.out
    assert read_csv(local_sweep["out"] / "results.csv") == local_sweep["rows"]


@pytest.mark.parametrize(("grid", "named"), [
    ("env.rewrd=purl,amc", "env.rewrd"),
    ("env.reward=purl,nope", "nope"),
    ("agent.algo=ppo,ppo9", "ppo9"),
    ("seed=0,1", "--seeds"),
    ("env.reward=purl,,amc", "empty value"),
    ("finetune.lr=0.1,0.01", "fine-tuning is the grid's"),
    ("data.val_fraction=0.1,0.2", "data split"),
])
def test_invalid_grid_exits_2_with_one_line_before_any_work(run_cli, tmp_cache: list[str], tmp_path: Path,
                                                            grid: str, named: str) -> None:
    out = tmp_path / "out"
    result = run_cli("train", "-q", "--device", "cpu", "-o", out, *tmp_cache, "--grid", grid, "--seeds", "0", "1")
    assert result.rc == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("purl train: error:") and named in lines[0], lines
    assert not out.exists() and not Path(tmp_cache[0].split("=", 1)[1]).exists()  # nothing built or written


def test_executor_without_a_sweep_is_an_error(run_cli, tmp_cache: list[str], tmp_path: Path) -> None:
    result = run_cli("train", "-q", "-o", tmp_path / "out", *tmp_cache, "--executor", "ray")
    assert result.rc == 2 and "--seeds" in result.err
    bad_seed = run_cli("train", "-q", *tmp_cache, "--seeds", "0", "x=1")
    assert bad_seed.rc == 2 and "overrides before --seeds" in bad_seed.err


def test_grid_values_split_at_top_level_commas_and_labels_are_safe_and_unique() -> None:
    assert split_values("purl,amc") == ["purl", "amc"]
    assert split_values("[0.5,0.9],[0.2, 0.4]") == ["[0.5,0.9]", "[0.2, 0.4]"]
    assert split_values("{w_acc: 1, w_sp: 2},{w_acc: 2}") == ["{w_acc: 1, w_sp: 2}", "{w_acc: 2}"]
    assert split_values("'a,b',c") == ["'a,b'", "c"]
    axes = parse_grid(["env.sparsity_grid=[0.5,0.9],[0.2,0.4,0.8]", "env.reward_kwargs.w_acc=1.0,2"])
    assert axes[0] == GridAxis("env.sparsity_grid", ("[0.5,0.9]", "[0.2,0.4,0.8]"), ([0.5, 0.9], [0.2, 0.4, 0.8]))
    assert axes[1].values == (1.0, 2)
    with pytest.raises(ConfigError, match="given twice"):
        parse_grid(["env.reward=purl,purl"])
    with pytest.raises(ConfigError, match="key given twice"):
        parse_grid(["env.reward=purl", "env.reward=amc"])
    labels = point_labels([(("a", "x y"),), (("a", "x/y"),), (("a", "z" * 300),)])
    assert len(set(labels)) == 3 and all(len(x) <= 90 and "/" not in x and " " not in x for x in labels)
    assert point_labels([()]) == ["agent"]


def test_sweep_config_is_the_grid_of_agents_and_targets() -> None:
    base = load_config(QUICK, ["device=cpu"])
    axes = parse_grid(["env.reward_kwargs.w_acc=1.0,2", "env.target_sparsity=0.5,0.8", "agent.algo=ppo"])
    config = sweep_config(base, axes, [3, 4])
    specs = config.compare.method_specs()
    assert [s.label for s in specs] == ["w_acc-1.0__algo-ppo", "w_acc-2__algo-ppo"]
    assert all(s.method == "agent" for s in specs) and specs[1].kwargs == {"env.reward_kwargs.w_acc": 2,
                                                                            "agent.algo": "ppo"}
    assert config.compare.sparsities == [0.5, 0.8] and config.compare.seeds == [3, 4]
    assert config.seed == base.seed and config.task_key() == base.task_key()  # one dense model for every unit
    with pytest.raises(ConfigError, match="given twice"):
        sweep_config(base, [], [1, 1])
