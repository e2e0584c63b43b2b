"""A full disk while torch.save writes (a RuntimeError from torch's C++ stream writer, not an OSError) is one
OutputError naming the file, ENOSPC, so the CLI prints one line and compare does not retry it; the old file
stays intact. Uses a real 300 KiB tmpfs (skipped where mounting is not allowed)."""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path

import pytest
import torch

from purl.checkpoint import atomic_write_bytes
from purl.compare.runner import is_deterministic
from purl.errors import OutputError


@pytest.fixture
def tiny_disk(tmp_path: Path):
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_torch_save_on_a_full_disk_is_one_output_error_and_keeps_the_old_file(tiny_disk: Path) -> None:
    path = tiny_disk / "pruned.pt"
    atomic_write_bytes(path, lambda handle: torch.save({"w": torch.zeros(10)}, handle))
    before = path.read_bytes()
    with pytest.raises(OutputError) as caught:
        atomic_write_bytes(path, lambda handle: torch.save({"w": torch.randn(200_000)}, handle))
    assert caught.value.errno == errno.ENOSPC and "No space left on device" in str(caught.value)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    assert is_deterministic(caught.value)  # a compare cell records it once
    assert path.read_bytes() == before and sorted(p.name for p in tiny_disk.iterdir()) == ["pruned.pt"]
