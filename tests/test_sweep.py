"""Tests of sweeps (``purl train --grid ... --seeds ...``, :mod:`agents.sweep`): units, table, resume, errors, Ray.

One local sweep of 4 tiny units (``--grid env.reward=purl,amc --seeds 0 1``) is run once for the module;
the tests read its folder, re-run it, and compare a Ray sweep of its seed-0 units with it.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
import textwrap
from pathlib import Path

import pytest

from agents.sweep import GridAxis, parse_grid, plan_units, split_values, unit_slugs
from purl.config import load_config
from purl.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "configs" / "quick.yaml"
FAST = ["pretrain.epochs=3", "agent.total_timesteps=48", "finetune.max_steps=3", "env.val_samples=64",
        "agent.hyperparams={n_steps: 24, batch_size: 24, n_epochs: 1}", "agent.checkpoint_every=24"]
GRID = ["--grid", "env.reward=purl,amc"]
SLUGS = ["reward-purl__seed0", "reward-purl__seed1", "reward-amc__seed0", "reward-amc__seed1"]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The module's local sweep: argv, output folder, rc, and the after_test_top1 of every unit right after it."""
    from purl.cli.main import main

    root = tmp_path_factory.mktemp("sweep")
    out, cache = root / "out", root / "cache"
    argv = ["train", "-c", str(QUICK), "-q", "--device", "cpu", "-o", str(out), f"cache_dir={cache}", *FAST,
            *GRID, "--seeds", "0", "1"]
    ray_before = "ray" in sys.modules
    rc = main(argv)
    rows = read_csv(out / "sweep.csv") if (out / "sweep.csv").is_file() else []
    return {"argv": argv, "out": out, "cache": cache, "rc": rc, "rows": rows,
            "imported_ray": not ray_before and "ray" in sys.modules,
            "top1": {r["unit"]: float(r["after_test_top1"]) for r in rows if r["after_test_top1"]}}


def test_local_sweep_writes_one_folder_per_unit_and_a_table(local_sweep: dict) -> None:
    out: Path = local_sweep["out"]
    assert local_sweep["rc"] == 0
    assert not local_sweep["imported_ray"]  # the local path never imports Ray
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(SLUGS)
    for slug in SLUGS:
        unit = out / "runs" / slug
        assert list((unit / "tb").glob("events.out.tfevents.*")), slug
        for name in ("results.json", "config.yaml", "pruned.pt", "episodes.csv", "checkpoints/last.zip"):
            assert (unit / name).is_file(), (slug, name)
        row = json.loads((unit / "results.json").read_text())
        assert row["command"] == "train" and row["unit"] == slug
        assert row["reward"] == slug.split("__")[0].removeprefix("reward-")
        assert row["seed"] == int(slug[-1]) and row["search_env_steps"] == 48

    rows = local_sweep["rows"]
    assert [r["unit"] for r in rows] == SLUGS
    assert [r["env.reward"] for r in rows] == ["purl", "purl", "amc", "amc"]
    assert [r["seed"] for r in rows] == ["0", "1", "0", "1"]
    assert all(r["status"] == "ok" and not r["error"] for r in rows)
    for column in ("after_test_top1", "before_test_top1", "achieved_sparsity", "search_episodes",
                   "search_env_steps", "search_wall_time_s", "wall_time_s", "best_episode_accuracy"):
        assert column in rows[0], column
    assert all(float(r["achieved_sparsity"]) == pytest.approx(0.9, abs=1e-4) for r in rows)

    md = (out / "sweep.md").read_text()
    assert "| env.reward | seeds ok |" in md and "`purl` | 2/2" in md and "`amc` | 2/2" in md and " ± " in md
    summary = json.loads((out / "results.json").read_text())
    assert summary["sweep"] is True and summary["units"] == 4 and summary["ok"] == 4 and summary["failed"] == 0
    assert summary["grid"] == {"env.reward": ["purl", "amc"]} and summary["seeds"] == [0, 1]


def test_rerun_skips_finished_units_and_reruns_only_missing_ones(local_sweep: dict, run_cli) -> None:
    out: Path = local_sweep["out"]
    results = {slug: out / "runs" / slug / "results.json" for slug in SLUGS}
    before = {slug: path.stat().st_mtime_ns for slug, path in results.items()}
    again = run_cli(*local_sweep["argv"])
    assert again.rc == 0, again.err
    assert again.out.count("finished earlier, skipped") == 4
    assert {slug: path.stat().st_mtime_ns for slug, path in results.items()} == before
    assert [r["status"] for r in read_csv(out / "sweep.csv")] == ["ok"] * 4
    assert json.loads((out / "results.json").read_text())["skipped"] == 4

    results["reward-amc__seed1"].unlink()  # as if interrupted after its checkpoint: only that unit runs
    third = run_cli(*local_sweep["argv"])
    assert third.rc == 0, third.err
    assert third.out.count("finished earlier, skipped") == 3
    assert results["reward-amc__seed1"].is_file()
    assert all(results[s].stat().st_mtime_ns == before[s] for s in SLUGS[:3])

    # the same folder with another config is refused before any work
    changed = run_cli(*[a if a != "agent.total_timesteps=48" else "agent.total_timesteps=72"
                        for a in local_sweep["argv"]])
    assert changed.rc == 2
    assert "agent.total_timesteps: 48 -> 72" in changed.err and "another --output" in changed.err


@pytest.mark.parametrize(("grid", "named"), [
    ("env.rewrd=purl,amc", "env.rewrd"),
    ("env.reward=purl,nope", "nope"),
    ("env.reward_kwargs.w_ac=1.0,2.0", "w_ac"),
    ("agent.algo=ppo,ppo9", "ppo9"),
    ("seed=0,1", "--seeds"),
    ("env.reward=purl,,amc", "empty value"),
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


def test_grid_values_split_at_top_level_commas_and_slugs_are_safe_and_unique() -> None:
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

    base = load_config(QUICK, ["device=cpu"])
    units = plan_units(base, parse_grid(["pretrain.lr=0.1,0.2", "finetune.lr=0.01", "env.sparsity_grid=[0.5,0.9]"]),
                       [3])
    assert [u.slug for u in units] == ["pretrain.lr-0.1__finetune.lr-0.01__sparsity_grid-0.5_0.9__seed3",
                                       "pretrain.lr-0.2__finetune.lr-0.01__sparsity_grid-0.5_0.9__seed3"]
    assert units[1].config.pretrain.lr == 0.2 and units[1].config.env.sparsity_grid == [0.5, 0.9]
    assert units[1].config.seed == base.seed  # the dense model's seed; the unit's seed is separate
    # values that differ only in unsafe characters still get distinct folders; long names are cut
    slugs = unit_slugs([(("a", "x y"),), (("a", "x/y"),), (("a", "z" * 300),)], [0])
    assert len(set(slugs)) == 3 and all(len(s) <= 100 and "/" not in s and " " not in s for s in slugs)


FAILING_REWARD = textwrap.dedent('''
    from envs.rewards.base import Reward


    class Boom(Reward):
        name = "boom"

        def __call__(self, ctx):
            raise RuntimeError("boom reward")
''')


def test_failing_unit_is_retried_then_recorded_without_stopping_others(
        run_cli, local_sweep: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sweep_boom_reward.py").write_text(FAILING_REWARD)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "out"
    result = run_cli("train", "-c", QUICK, "-q", "--device", "cpu", "-o", out, f"cache_dir={local_sweep['cache']}",
                     *FAST, "compare.max_retries=2", "--grid", "env.reward=sweep_boom_reward:Boom,purl",
                     "--seeds", "0")
    assert result.rc == 1
    rows = {r["env.reward"]: r for r in read_csv(out / "sweep.csv")}
    boom = rows["sweep_boom_reward:Boom"]
    assert boom["status"] == "failed" and boom["attempts"] == "3" and "boom reward" in boom["error"]
    assert rows["purl"]["status"] == "ok"
    assert float(rows["purl"]["after_test_top1"]) == local_sweep["top1"]["reward-purl__seed0"]
    assert json.loads((out / "results.json").read_text())["failed"] == 1


def test_ray_sweep_matches_local(run_cli, local_sweep: dict, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    paths = [str(ROOT)] + [str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}})
    try:
        out = tmp_path / "ray"
        result = run_cli("train", "-c", QUICK, "-q", "--device", "cpu", "-o", out,
                         f"cache_dir={local_sweep['cache']}", *FAST, *GRID, "--seeds", "0", "--executor", "ray")
        assert result.rc == 0, result.err + result.out
    finally:
        if started:
            ray.shutdown()
    rows = read_csv(out / "sweep.csv")
    assert [r["unit"] for r in rows] == ["reward-purl__seed0", "reward-amc__seed0"]
    assert all(r["status"] == "ok" for r in rows)
    assert {r["unit"]: float(r["after_test_top1"]) for r in rows} == {
        slug: local_sweep["top1"][slug] for slug in ("reward-purl__seed0", "reward-amc__seed0")}
    for slug in ("reward-purl__seed0", "reward-amc__seed0"):
        assert list((out / "runs" / slug / "tb").glob("events.out.tfevents.*"))
