"""`purl compare` retries only what may pass on a second try (issue #22): a cell failing with a user error
(:class:`purl.errors.PurlError`: ConfigError, PruningError, ...) or a full disk (OSError ENOSPC) is recorded once,
attempts = 1; any other exception is still retried ``compare.max_retries`` times."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest

from purl.compare import ResultsTable

PLUGIN = "deterministic_failures"
FAST = ["pretrain.epochs=2", "finetune.epochs=1", "finetune.max_steps=3", "compare.sparsities=[0.5]",
        "compare.seeds=[0]", "compare.max_retries=2"]
SOURCE = textwrap.dedent("""
    import errno
    from collections import Counter

    from purl.baselines import Allocator
    from purl.errors import ConfigError, PruningError

    CALLS = Counter()


    class _Failing(Allocator):
        def allocate(self, layers, sparsity, constraints=None, *, generator=None):
            CALLS[type(self).__name__] += 1
            raise self.error()


    class Impossible(_Failing):
        name = "impossible"

        def error(self):
            return PruningError("cannot reach the target under these constraints")


    class Misconfigured(_Failing):
        name = "misconfigured"

        def error(self):
            return ConfigError("method_kwargs.alpha must be positive")


    class DiskFull(_Failing):
        name = "disk-full"

        def error(self):
            return OSError(errno.ENOSPC, "No space left on device", "/full/disk/cells")


    class Flaky(_Failing):
        name = "flaky"

        def error(self):
            return RuntimeError("a transient failure")
""")


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / f"{PLUGIN}.py").write_text(SOURCE)
    monkeypatch.syspath_prepend(str(folder))
    sys.modules.pop(PLUGIN, None)
    yield
    sys.modules.pop(PLUGIN, None)


def test_deterministic_errors_are_recorded_once_others_are_retried(run_cli, tmp_path: Path, plugin) -> None:
    methods = ",".join(f"'{PLUGIN}:{name}'" for name in ("Impossible", "Misconfigured", "DiskFull", "Flaky"))
    out = tmp_path / "cmp"
    result = run_cli("compare", "--config", "configs/quick.yaml", "-q", "--device", "cpu", "-o", out,
                     f"cache_dir={tmp_path / 'cache'}", *FAST, f"compare.methods=[global-mp,{methods}]")
    assert result.rc == 1, result.err
    assert "Traceback" not in result.err + result.out
    rows = {row["label"].split(":")[-1]: row for row in ResultsTable.read(out / "results.csv")}
    assert rows.pop("global-mp")["status"] == "ok"
    assert all(row["status"] == "failed" for row in rows.values())
    attempts = {name: row["attempts"] for name, row in rows.items()}
    assert attempts == {"Impossible": 1, "Misconfigured": 1, "DiskFull": 1, "Flaky": 3}
    assert dict(importlib.import_module(PLUGIN).CALLS) == attempts
    assert "PruningError: cannot reach the target" in rows["Impossible"]["error"]
    assert "ConfigError: method_kwargs.alpha must be positive" in rows["Misconfigured"]["error"]
    assert "No space left on device" in rows["DiskFull"]["error"]
    assert "not retried" in rows["Impossible"]["error"] and "not retried" in rows["DiskFull"]["error"]
    assert rows["Flaky"]["error"].count("a transient failure") == 3
