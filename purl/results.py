"""Writing results files atomically: JSON a person can open, never half-written."""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

from purl.checkpoint import atomic_write_bytes
from purl.errors import OutputError

MIN_FREE_BYTES = 1 << 20  # a folder on a disk with less free space than this is treated as full


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and (math.isinf(value) or math.isnan(value)):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def write_json(path: str | Path, data: Any) -> Path:
    """Pretty JSON (inf/nan as strings), written atomically."""
    path = Path(path)
    text = json.dumps(_jsonable(data), indent=2, sort_keys=False) + "\n"
    atomic_write_bytes(path, lambda handle: handle.write(text.encode()))
    return path


def write_text(path: str | Path, text: str) -> Path:
    """A text file (Markdown, CSV), written atomically."""
    path = Path(path)
    atomic_write_bytes(path, lambda handle: handle.write(text.encode()))
    return path


def check_writable(folder: str | Path, *, what: str = "output folder") -> Path:
    """OutputError unless files can be written in ``folder`` (which need not exist yet); nothing is created.

    Checked before any heavy work, so a run never trains for minutes and then fails to save. A folder that
    does not exist yet is judged by its nearest existing parent (where it will be created); an existing
    file in the way, a read-only location and a full disk are one-line errors naming the folder.
    """
    folder = Path(folder)
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        where = "it is a file" if probe == folder else f"'{probe}' is a file"
        raise OutputError(f"cannot create {what} '{folder}': {where}, not a folder; choose another path")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
        free = shutil.disk_usage(probe).free
    except OSError as exc:
        raise OutputError(f"cannot write to {what} '{folder}': {exc.strerror or exc}; choose another path "
                          "or make it writable", exc) from None
    if free < MIN_FREE_BYTES:
        raise OutputError(f"cannot write to {what} '{folder}': no space left on its disk ({free} bytes free); "
                          "free some space or choose another path")
    return folder
