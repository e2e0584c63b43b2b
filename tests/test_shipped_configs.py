"""Shipped configs resolve from any working directory (issue #22): ``--config quick`` (a bare name) and
``--config configs/quick.yaml`` find the config shipped as package data (``purl.configs``), an existing path
wins, an unknown name is one line listing the shipped names, and ``purl list configs`` lists them from
anywhere. Each check runs in a subprocess whose working directory has no ``configs/`` folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.stem for p in (REPO / "configs").glob("*.yaml"))


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)


def _purl(cwd: Path, *argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "purl.cli.main", *map(str, argv)], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return folder


def test_shipped_configs_resolve_by_name_and_by_relative_path(elsewhere: Path) -> None:
    code = ("import json; from purl.config import load_config, resolve_config_path, shipped_configs; "
            "names = ['quick', 'quick.yaml', 'configs/quick.yaml', 'configs/quick', 'mnist5k-lenet5']; "
            "print(json.dumps({'names': sorted(shipped_configs()), 'loaded': [load_config(n).name for n in names], "
            "'path': str(resolve_config_path('quick'))}))")
    result = _python(code, elsewhere)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got["names"] == SHIPPED
    quick = (REPO / "configs" / "quick.yaml").read_text()
    assert Path(got["path"]).read_text() == quick
    expected = [load_name("quick")] * 4 + [load_name("mnist5k-lenet5")]
    assert got["loaded"] == expected


def load_name(stem: str) -> str:
    from purl.config import load_config

    return load_config(REPO / "configs" / f"{stem}.yaml").name


def test_an_existing_path_wins_over_a_shipped_config(elsewhere: Path) -> None:
    (elsewhere / "configs").mkdir()
    (elsewhere / "configs" / "quick.yaml").write_text("name: my-local-quick\n")
    (elsewhere / "quick").write_text("name: a-file-called-quick\n")
    code = ("from purl.config import load_config; "
            "print(load_config('configs/quick.yaml').name, load_config('quick').name, load_config('quick.yaml').name)")
    result = _python(code, elsewhere)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["my-local-quick", "a-file-called-quick", load_name("quick")]


def test_an_unknown_config_is_one_line_listing_the_shipped_names(elsewhere: Path) -> None:
    result = _purl(elsewhere, "pretrain", "--config", "no-such-config", "-q")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("purl pretrain: error: config file 'no-such-config' does not exist")
    assert all(name in lines[0] for name in SHIPPED)


def test_the_cli_runs_a_shipped_config_from_another_directory(elsewhere: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    args = ["-q", "--device", "cpu", f"cache_dir={cache}", "pretrain.epochs=1"]
    first = _purl(elsewhere, "pretrain", "--config", "quick", "-o", elsewhere / "a", *args)
    assert first.returncode == 0, first.stderr
    second = _purl(elsewhere, "pretrain", "--config", "configs/quick.yaml", "-o", elsewhere / "b", *args)
    assert second.returncode == 0, second.stderr
    a, b = (json.loads((elsewhere / run / "results.json").read_text()) for run in ("a", "b"))
    assert not a["from_cache"] and b["from_cache"]  # the same shipped config: the same dense model
    assert a["test_top1"] == b["test_top1"]


def test_purl_list_configs_from_anywhere(elsewhere: Path) -> None:
    result = _purl(elsewhere, "list", "configs")
    assert result.returncode == 0, result.stderr
    listed = [line.split()[0] for line in result.stdout.splitlines()[1:] if line.strip()]
    assert listed == SHIPPED
