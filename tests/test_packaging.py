"""Packaging: one import name. The wheel installs only ``purl`` (the design card's top-level folders envs/,
agents/ and baselines/ become purl.envs, purl.agents and purl.baselines; configs/ becomes purl.configs with its
YAMLs as package data), and no package is left out."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parents[1]
MAPPED = {"purl.envs": "envs", "purl.agents": "agents", "purl.baselines": "baselines", "purl.configs": "configs",
          "purl.cli": "cli"}


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _discovered_packages() -> set[str]:
    """Every folder with an ``__init__.py`` under purl/ and the mapped folders, as its import name."""
    found: set[str] = set()
    roots = {"purl": "purl", **MAPPED}
    for name, folder in roots.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder).parts
            if name == "purl" and rel and any(f"purl.{rel[0]}" == m for m in MAPPED):
                continue
            found.add(".".join((name, *rel)))
    return found


def test_every_package_is_listed_in_pyproject() -> None:
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    assert listed == _discovered_packages()


def test_the_distribution_name_is_not_the_url_library() -> None:
    assert _pyproject()["project"]["name"] == "purl-prune"


@pytest.mark.skipif(importlib.util.find_spec("setuptools") is None, reason="needs setuptools to build a wheel")
def test_the_wheel_installs_only_the_purl_package(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for folder in ("purl", *MAPPED.values()):
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"purl"}
    top_level = next(n for n in names if n.endswith("top_level.txt"))
    assert zipfile.ZipFile(wheel).read(top_level).decode().split() == ["purl"]
    for package in MAPPED:
        assert f"{package.replace('.', '/')}/__init__.py" in names
    assert "purl/envs/rewards/__init__.py" in names
    shipped = sorted(f"purl/configs/{p.name}" for p in (REPO / "configs").glob("*.yaml"))
    assert shipped and sorted(n for n in names if n.startswith("purl/configs/") and n.endswith(".yaml")) == shipped


def test_the_mapped_packages_import_from_any_directory(tmp_path: Path) -> None:
    code = ("import purl.envs, purl.agents, purl.baselines, importlib.util; "
            "print(all(importlib.util.find_spec(m) is None for m in ('envs', 'agents', 'baselines')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "True"


def test_the_core_imports_no_upper_floor() -> None:
    """purl/ (the core) never imports envs, agents, baselines or the CLI: they build on it, not it on them."""
    import re

    upper = re.compile(r"^\s*(from|import)\s+purl\.(envs|agents|baselines|cli)\b", re.M)
    offenders = [f"{path.relative_to(REPO)}: {match.group(0).strip()}" for path in sorted((REPO / "purl").rglob("*.py"))
                 for match in upper.finditer(path.read_text())]
    assert not offenders, offenders
