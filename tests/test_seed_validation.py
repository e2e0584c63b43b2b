"""Seeds are non-negative integers (issue #22): ``--seed``, the config's ``seed`` and ``compare.seeds`` entries are
refused at validation with one line, before any work (numpy's seeding used to raise a ValueError traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_checks import one_line_error

from purl.config import load_config
from purl.errors import ConfigError

QUICK = "configs/quick.yaml"


@pytest.fixture
def no_heavy_work(monkeypatch):
    import purl.task

    def forbidden(*args, **kwargs):
        raise AssertionError("build_task ran although the seed is invalid")

    monkeypatch.setattr(purl.task, "build_task", forbidden)




@pytest.mark.parametrize("override", ["seed=-1", "compare.seeds=[0, -3]"])
def test_a_negative_seed_in_the_config_is_refused(override: str) -> None:
    with pytest.raises(ConfigError, match="non-negative integer"):
        load_config(QUICK, [override])


@pytest.mark.parametrize("override", ["seed=1.5", "compare.seeds=[0.5]", "seed=abc"])
def test_a_non_integer_seed_in_the_config_is_refused(override: str) -> None:
    with pytest.raises(ConfigError, match="seed"):
        load_config(QUICK, [override])


def test_non_negative_seeds_are_accepted() -> None:
    config = load_config(QUICK, ["seed=0", "compare.seeds=[0, 1, 4294967296]"])
    assert config.seed == 0 and config.compare.seeds == [0, 1, 4294967296]


@pytest.mark.parametrize("value", ["-1", "abc", "1.5"])
def test_the_seed_flag_isone_line_error(run_cli, tmp_path: Path, no_heavy_work, value: str) -> None:
    result = run_cli("prune", "--config", QUICK, "--seed", value, "-q", "--device", "cpu", "-o", tmp_path / "out",
                     f"cache_dir={tmp_path / 'cache'}")
    line = one_line_error(result, "prune", "--seed", "non-negative integer", repr(value))
    assert not (tmp_path / "out").exists(), line


@pytest.mark.parametrize("override", ["seed=-1", "compare.seeds=[-1]"])
def test_a_negative_config_seed_isone_line_error(run_cli, tmp_path: Path, no_heavy_work, override: str) -> None:
    result = run_cli("compare", "--config", QUICK, "-q", "--device", "cpu", "-o", tmp_path / "out",
                     f"cache_dir={tmp_path / 'cache'}", override)
    one_line_error(result, "compare", "non-negative integer")


@pytest.mark.parametrize("seeds", [["-1"], ["0,-2"], ["0", "-3"]])
def test_a_negative_sweep_seed_names_the_flag(run_cli, tmp_path: Path, no_heavy_work, seeds: list[str]) -> None:
    result = run_cli("train", "--config", QUICK, "-q", "--device", "cpu", "-o", tmp_path / "out",
                     f"cache_dir={tmp_path / 'cache'}", "--seeds", *seeds)
    line = one_line_error(result, "train", "--seeds -", "non-negative integer")
    assert "--grid" not in line and not (tmp_path / "out").exists(), line
