"""Exports get the same file mode as every other output (issue #22): ``pruned.onnx``, ``pruned.pt2`` and
``pruned.json`` were left at the temporary files' 0600; now 0666 minus the umask (0644 under umask 022), like
results.json, config.yaml and checkpoints (atomic writes)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
from torch import nn

from purl.export import export_pruned
from purl.results import write_json

torch.set_num_threads(1)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_exports_respect_the_umask_like_other_outputs(tmp_path: Path, umask: int) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    result = export_pruned(model, (1, 4, 4), tmp_path, granularity="weight")
    write_json(tmp_path / "results.json", {"ok": True})
    want = 0o666 & ~umask
    files = [Path(p) for p in result.paths.values()] + [tmp_path / "pruned.json"]
    assert {p.name for p in files} == {"pruned.pt2", "pruned.onnx", "pruned.json"}
    assert {p.name: oct(_mode(p)) for p in files} == {p.name: oct(want) for p in files}
    assert _mode(tmp_path / "results.json") == want


def test_every_file_of_a_prune_run_has_one_mode(run_cli, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        out = tmp_path / "out"
        result = run_cli("prune", "--config", "configs/quick.yaml", "-q", "--device", "cpu", "-o", out,
                         f"cache_dir={tmp_path / 'cache'}", "pretrain.epochs=2", "finetune.max_steps=3")
    finally:
        os.umask(old)
    assert result.rc == 0, result.err
    modes = {p.name: oct(_mode(p)) for p in out.rglob("*") if p.is_file()}
    assert {"pruned.pt2", "pruned.onnx", "pruned.json", "results.json"} <= set(modes)
    assert set(modes.values()) == {oct(0o644)}, modes
