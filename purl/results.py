"""Writing results files atomically: JSON a person can open, never half-written."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from purl.checkpoint import atomic_write_bytes


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
