"""One writer per output folder: an advisory lock that `purl compare`, `purl train` and `purl prune` hold.

Two runs writing one folder corrupt it silently (interleaved ``episodes.csv`` rows, doubled learning curves, a
``results.csv`` rewritten by both). The first run takes ``<folder>/.purl.lock`` with ``fcntl.flock`` and
records who holds it (PID, host, start time, command); a second run into a held folder stops at once with one
line naming the holder. The kernel releases the lock when its holder dies, even by SIGKILL, so a stale lock
file (holder gone) is simply taken over, with a line saying so.

Locks are taken through :func:`acquire` (re-entrant per folder within a process) and released together by
:func:`release_all`, which the CLI's ``main`` calls when a command ends; a folder the lock created that holds
nothing else afterwards is removed again, so a run that fails early leaves no empty folder behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from purl.errors import OutputError

LOCK_NAME = ".purl.lock"


@dataclass
class _Held:
    handle: IO[str]
    created: list[Path]  # folders this lock created (deepest last), removed again if left empty


_HELD: dict[Path, _Held] = {}


def _describe(holder: dict) -> str:
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return (f"PID {holder.get('pid', '?')} on {holder.get('host', '?')} "
            f"({holder.get('command', 'purl')}, started {when})")


def _read_holder(handle: IO[str]) -> dict:
    handle.seek(0)
    try:
        holder = json.loads(handle.read() or "{}")
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _make_folder(folder: Path) -> list[Path]:
    """Create ``folder`` and missing parents; return those created (shallowest first)."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder '{folder}': {exc.strerror or exc}", exc) from None
    return missing


def acquire(folder: str | Path, command: str) -> None:
    """Hold the output lock of ``folder`` until :func:`release_all`; OutputError naming the holder if another
    live process holds it. Taking over a lock file whose holder is gone prints one line on stderr."""
    folder = Path(folder).resolve()
    if folder in _HELD:
        return
    created = _make_folder(folder)
    path = folder / LOCK_NAME
    try:
        handle = open(path, "a+")  # noqa: SIM115 - held open for the run: the open file is the lock
    except OSError as exc:
        raise OutputError(f"cannot write to output folder '{folder}': {exc.strerror or exc}", exc) from None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = _read_holder(handle)
        handle.close()
        raise OutputError(f"output folder '{folder}' is in use by {_describe(holder)}: one run writes a folder at a "
                          "time; wait for it to finish, or use another --output") from None
    previous = _read_holder(handle)
    if previous.get("pid") not in (None, os.getpid()):
        alive = previous.get("host") == socket.gethostname() and _pid_alive(previous.get("pid"))
        state = "still running but not holding the lock" if alive else "no longer running"
        print(f"note: took over the stale lock of '{folder}' from {_describe(previous)}, {state}", file=sys.stderr)
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                             "command": command}) + "\n")
    handle.flush()
    _HELD[folder] = _Held(handle, created)


def held(folder: str | Path) -> bool:
    """True when this process holds the lock of ``folder``."""
    return Path(folder).resolve() in _HELD


def release_all() -> None:
    """Release every lock this process holds: remove the lock files, then any folder the lock created that is
    empty again (a run that failed before writing anything leaves nothing behind)."""
    while _HELD:
        folder, entry = _HELD.popitem()
        with contextlib.suppress(OSError):
            (folder / LOCK_NAME).unlink()
        entry.handle.close()  # closing releases the flock
        for path in reversed(entry.created):
            with contextlib.suppress(OSError):
                path.rmdir()  # only succeeds when empty
