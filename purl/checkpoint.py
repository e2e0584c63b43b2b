"""Checkpoints that load with ``torch.load(..., weights_only=True)`` and carry their config.

A checkpoint is a plain dict of tensors and JSON-like values::

    {"format": "purl-checkpoint-v1", "state_dict": {...}, "masks": {...} | None,
     "config": {...}, "meta": {...}}

Writes are atomic (temporary file + rename), so an interrupted save never
leaves a half-written file in place of a good one.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from purl.errors import CheckpointError, OutputError
from purl.numerics import first_non_finite

FORMAT = "purl-checkpoint-v1"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode of every output file: 0666 minus the umask, what ``open()`` would give (``mkstemp`` makes 0600)."""
    return 0o666 & ~_umask()


def write_failure(path: Path, exc: OSError) -> OutputError:
    """The one-line :class:`OutputError` for an OSError raised while writing ``path`` (keeps errno etc.)."""
    if isinstance(exc, OutputError):
        return exc
    reason = exc.strerror or str(exc) or type(exc).__name__
    return OutputError(f"cannot write '{path}': {reason}; earlier files there are intact (writes are atomic), "
                       "free space or fix the folder's permissions and rerun", exc)


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Call ``write(file_object)`` on a temp file beside ``path``, then rename it over ``path``.

    A failure leaves the old file untouched. An OSError (read-only folder, full disk) becomes an
    :class:`~purl.errors.OutputError`, which is still an OSError but prints as one line in the CLI.
    """
    tmp: str | None = None
    created = [p for p in (path.parent, *path.parent.parents) if not p.exists()]  # deepest first
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.chmod(tmp, default_file_mode())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        for folder in created:  # leave no empty folders behind; a folder that got files stays
            try:
                folder.rmdir()
            except OSError:
                break
        if isinstance(exc, OSError):
            raise write_failure(path, exc) from exc
        if isinstance(exc, RuntimeError) and _torch_writer_failure(exc):  # torch.save on a full disk
            raise write_failure(path, _as_os_error(exc, path)) from exc
        raise


#: what torch.save's C++ stream writer raises (a RuntimeError, not an OSError) when a write fails
_TORCH_WRITER_FAILURES = ("PytorchStreamWriter failed", "inline_container.cc", "unexpected pos")


def _torch_writer_failure(exc: RuntimeError) -> bool:
    return any(marker in str(exc) for marker in _TORCH_WRITER_FAILURES)


def _as_os_error(exc: RuntimeError, path: Path) -> OSError:
    """The OSError a torch writer failure stands for: ENOSPC when the disk is (nearly) full, else EIO."""
    import errno
    import shutil

    try:
        full = shutil.disk_usage(path.parent).free < 1 << 20
    except OSError:
        full = False
    if full:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return OSError(errno.EIO, f"the file could not be written ({exc})", str(path))


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    config: dict[str, Any],
    masks: dict[str, torch.Tensor] | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Save weights (on CPU), optional masks, the resolved config and metadata, atomically."""
    path = Path(path)
    payload = {
        "format": FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "masks": {k: v.detach().cpu() for k, v in masks.items()} if masks is not None else None,
        "config": config,
        "meta": meta or {},
    }
    atomic_write_bytes(path, lambda handle: torch.save(payload, handle))
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a PuRL checkpoint safely (``weights_only=True``); CheckpointError if missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        with warnings.catch_warnings():  # garbage bytes make torch warn about odd pickle protocols
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt bytes surface as any of many types (IndexError, KeyError, ...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if len(first) > 120:  # torch's weights-only failure is a paragraph; its first sentence says it all
            first = first.split(". ")[0]
        raise CheckpointError(f"checkpoint '{path}' is corrupt or not a PuRL checkpoint ({first})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or not isinstance(
        payload.get("state_dict"), dict
    ):
        raise CheckpointError(f"checkpoint '{path}' is not a PuRL checkpoint (expected format '{FORMAT}')")
    return payload


def load_weights(model: nn.Module, payload: dict[str, Any], path: str | Path = "<checkpoint>") -> None:
    """Load a checkpoint's weights into ``model``; a shape or key mismatch, or a tensor holding NaN or inf,
    is a CheckpointError (naming the tensor)."""
    state = payload["state_dict"]
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint '{path}' does not match the configured model: {first}") from None
    bad = first_non_finite((name, value) for name, value in state.items() if isinstance(value, torch.Tensor))
    if bad is not None:
        raise CheckpointError(f"checkpoint '{path}' is damaged: tensor {bad.describe()} (a diverged training run "
                              "or a corrupt file)")
