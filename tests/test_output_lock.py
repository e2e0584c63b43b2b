"""One writer per output folder (purl/lock.py): a second run into a held folder stops at once naming the holder;
a lock whose holder died (even by SIGKILL) is taken over with a line saying so; nothing is left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from purl import lock
from purl.errors import OutputError

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "configs" / "quick.yaml")

HOLDER = textwrap.dedent("""
    import sys, time
    from purl import lock
    lock.acquire(sys.argv[1], "purl compare")
    print("held", flush=True)
    time.sleep(120)
""")


def _hold(folder: Path) -> subprocess.Popen:
    """A real second process holding ``folder``'s lock (until killed)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _purl(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"HOME": str(cwd), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "purl.cli.main", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("command", [
    ["compare", "--config", QUICK, "compare.methods=[global-mp]", "compare.sparsities=[0.5]"],
    ["prune", "--config", QUICK, "--sparsity", "0.5"],
    ["train", "--config", QUICK, "agent.total_timesteps=6"],
])
def test_a_second_run_into_a_held_folder_stops_at_once_naming_the_holder(tmp_path: Path, command: list[str]) -> None:
    out = tmp_path / "out"
    holder = _hold(out)
    try:
        start = time.perf_counter()
        result = _purl(*command, "-o", str(out), "--quiet", f"cache_dir={tmp_path / 'cache'}", cwd=tmp_path)
        elapsed = time.perf_counter() - start
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"is in use by PID {holder.pid} on " in lines[0] and "purl compare" in lines[0]
    assert elapsed < 60  # stopped before pre-training or any cell
    assert sorted(p.name for p in out.iterdir()) == [lock.LOCK_NAME]  # the holder's folder is untouched


def test_a_lock_whose_holder_was_killed_is_taken_over_with_a_note(tmp_path: Path) -> None:
    out = tmp_path / "out"
    holder = _hold(out)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (out / lock.LOCK_NAME).is_file()  # SIGKILL left the file; the kernel released the lock
    result = _purl("prune", "--config", QUICK, "--sparsity", "0.5", "-o", str(out), "--quiet",
                   f"cache_dir={tmp_path / 'cache'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"took over the stale lock of '{out.resolve()}' from PID {holder.pid}" in result.stderr
    assert "no longer running" in result.stderr
    assert (out / "results.json").is_file() and not (out / lock.LOCK_NAME).exists()


def test_in_process_the_lock_is_reentrant_and_refuses_nobody_after_release(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    lock.acquire(out, "purl prune")
    lock.acquire(out, "purl prune")  # the same process again: fine
    assert lock.held(out) and (out / lock.LOCK_NAME).is_file()
    lock.release_all()
    assert not lock.held(out) and not (tmp_path / "a").exists()  # created by the lock, empty: removed
    holder = _hold(out)
    try:
        with pytest.raises(OutputError, match=f"in use by PID {holder.pid}"):
            lock.acquire(out, "purl prune")
    finally:
        holder.kill()
        holder.wait()
    lock.acquire(out, "purl prune")  # the kernel released the dead holder's lock
    lock.release_all()


def test_a_failed_run_leaves_no_folder_behind(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "never"
    result = run_cli("prune", "--config", QUICK, "--sparsity", "0.5", "model.name=nosuchnet", "-o", out, "--quiet")
    assert result.rc == 2 and not out.exists()
