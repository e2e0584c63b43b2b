"""Tests of purl.compare.ray_executor: Ray gives the same rows as in-process runs, retries, resumes.

One local Ray instance (2 CPUs) serves the whole module. The method runners are tiny functions in
a module written here (uniform and global magnitude pruning, one that raises, one that kills its
worker, one that kills it only on the first attempt); every invocation appends a line to a ledger
beside the runners' module (outside every output folder, so a killed worker's lines survive) so the tests
can count how often each cell ran, and writes ``artifact.txt`` in its cell folder, which must reach the
driver's output folder although the worker runs in a scratch folder of its own.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import re
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

import purl  # noqa: E402
from purl.compare import ResultsTable, run_comparison  # noqa: E402
from purl.compare.cells import Cell  # noqa: E402
from purl.compare.ray_executor import (  # noqa: E402
    NO_RAY,
    RayExecutor,
    merge_failures,
    task_from_payload,
    worker_device,
)
from purl.compare.runner import CellJob, CellOutcome, LocalExecutor  # noqa: E402
from purl.config import load_config  # noqa: E402
from purl.errors import PurlError  # noqa: E402

MODULE = "purl_ray_test_runners"
RUNNER = f"{MODULE}:METHOD"  # a purl.methods.Method by import path: Ray workers resolve it too
ROOT = Path(purl.__file__).resolve().parents[1]

RUNNERS_SOURCE = textwrap.dedent('''
    """Method runners for tests/test_ray_executor.py (written there at test time)."""
    import json
    import os
    from pathlib import Path

    import torch

    from purl.pipeline import finetune_and_measure
    from purl.pruning import magnitude_mask, pruned_count


    class TestMethod:
        """A purl.methods.Method whose behaviour is chosen by the cell's label."""

        def cell_config(self, base, spec, target_sparsity):
            return base

        def validate(self, config, spec):
            pass

        def run(self, cell):
            task, spec, target_sparsity, cell_dir = cell.task, cell.spec, cell.target_sparsity, cell.folder
            ledger = Path(__file__).with_name("ledger")
            ledger.mkdir(exist_ok=True)
            log = ledger / f"{cell_dir.name}.txt"
            first = not log.exists()
            with open(log, "a") as handle:
                handle.write(json.dumps({"pid": os.getpid(), "task": id(task), "folder": str(cell_dir)}) + "\\n")
            (cell_dir / "artifact.txt").write_text(f"written by {os.getpid()}")
            if spec.label == "boom":
                raise RuntimeError("boom")
            if spec.label == "crash" or (spec.label == "crash-once" and first):
                os._exit(3)
            model, masks = task.fresh_copy()
            if spec.label == "global":
                weights = [masks.layer(name).weight.detach().abs().flatten() for name in masks.names]
                keep = magnitude_mask(torch.cat(weights),
                                      pruned_count(target_sparsity, sum(w.numel() for w in weights)))
                for name, part in zip(masks.names, torch.split(keep, [w.numel() for w in weights])):
                    masks.set_mask(name, part.view_as(masks.layer(name).weight))
            else:
                masks.prune_layers({name: target_sparsity for name in masks.names})
            return finetune_and_measure(task, model, masks, seed=cell.seed, progress=cell.progress)


    METHOD = TestMethod()
''')


@pytest.fixture(scope="module")
def runner_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("runners")
    (folder / f"{MODULE}.py").write_text(RUNNERS_SOURCE)
    return folder


@pytest.fixture(scope="module")
def ray_session(runner_dir: Path):
    """The module's one local Ray instance; its workers can import purl and the test runners."""
    paths = [str(runner_dir), str(ROOT)] + [str(Path(p).resolve()) for p in
                                             os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}})
    yield
    ray.shutdown()


@pytest.fixture
def runners(runner_dir: Path, monkeypatch: pytest.MonkeyPatch, ray_session) -> str:
    """The test method's import path (importable here and in the Ray workers)."""
    monkeypatch.syspath_prepend(str(runner_dir))
    shutil.rmtree(runner_dir / "ledger", ignore_errors=True)
    return RUNNER


def methods(*labels: str) -> str:
    """A compare.methods override: the test method under each label."""
    return "compare.methods=[" + ", ".join(f"{{label: {x}, method: '{RUNNER}'}}" for x in labels) + "]"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def quick_config(cache: Path, *extra: str):
    return load_config(None, [f"cache_dir={cache}", "device=cpu", "pretrain.epochs=2", "finetune.max_steps=5",
                              "compare.sparsities=[0.5,0.9]", "compare.seeds=[0]",
                              methods("uniform", "global"), *extra])


def dense_task(config):
    import torch

    from purl.task import build_task

    return build_task(config, torch.device("cpu"), progress=False)


def ledger() -> Path:
    return Path(sys.modules[MODULE].__file__).with_name("ledger") if MODULE in sys.modules else Path("/nonexistent")


def reset_ledger() -> None:
    shutil.rmtree(ledger(), ignore_errors=True)


def invocations() -> dict[str, int]:
    """How often each cell ran since the last reset_ledger() (killed attempts included)."""
    return {f.stem: len(f.read_text().splitlines()) for f in sorted(ledger().glob("*.txt"))}


def folders() -> list[Path]:
    """The cell folders the method ran in, as the method saw them."""
    return [Path(json.loads(line)["folder"]) for f in sorted(ledger().glob("*.txt")) for line in
            f.read_text().splitlines()]


def assert_same_rows(a: list[dict], b: list[dict]) -> None:
    def keyed(rows):
        return {(r["label"], float(r["target_sparsity"]), int(r["seed"])): r for r in rows}

    left, right = keyed(a), keyed(b)
    assert left.keys() == right.keys()
    for key, row in left.items():
        other = right[key]
        for column, value in row.items():
            if column == "wall_time_s":
                continue
            if isinstance(value, float) and not math.isnan(value):
                assert other[column] == pytest.approx(value, abs=1e-9, rel=0), (key, column)
            else:
                assert other[column] == value, (key, column)


def test_ray_rows_match_local(cache_dir: Path, tmp_path: Path, runners) -> None:
    config = quick_config(cache_dir)
    task = dense_task(config)
    local = run_comparison(config, tmp_path / "local", executor=LocalExecutor(task), device="cpu",
                           progress=False)
    reset_ledger()
    written: list[int] = []
    executor = RayExecutor(config.compare, "cpu")
    remote = run_comparison(config, tmp_path / "ray", executor=executor, device="cpu", progress=False,
                            report=lambda outcome, done, total: written.append(len(ResultsTable(
                                tmp_path / "ray" / "results.csv").rows)))
    assert written == [1, 2, 3, 4]  # results.csv grows cell by cell
    assert len(local.rows) == 4 and all(r["status"] == "ok" and r["attempts"] == 1 for r in remote.rows)
    assert_same_rows(ResultsTable(tmp_path / "local" / "results.csv").rows,
                     ResultsTable(tmp_path / "ray" / "results.csv").rows)
    assert ray.is_initialized() and not executor.started  # an instance it did not start is left running
    assert set(invocations().values()) == {1}
    # only the driver wrote the output folder: the workers ran in scratch folders, their files came back
    out = (tmp_path / "ray").resolve()
    assert folders() and not any(out in f.resolve().parents for f in folders())
    for cell in (out / "cells").iterdir():
        assert (cell / "artifact.txt").read_text().startswith("written by ")


def test_task_from_payload_needs_no_checkpoint_file(cache_dir: Path) -> None:
    import torch

    from purl.checkpoint import load_checkpoint

    config = quick_config(cache_dir)
    task = dense_task(config)
    payload = load_checkpoint(task.dense_path)
    hidden = task.dense_path.with_suffix(".hidden")
    task.dense_path.rename(hidden)
    try:
        rebuilt = task_from_payload(config, torch.device("cpu"), payload)
    finally:
        hidden.rename(task.dense_path)
    assert rebuilt.dense_test == task.dense_test and rebuilt.from_cache
    for name, tensor in task.model.state_dict().items():
        assert torch.equal(rebuilt.model.state_dict()[name], tensor)


def test_failures_are_retried_then_recorded_without_losing_other_cells(cache_dir: Path, tmp_path: Path,
                                                                        runners) -> None:
    config = quick_config(cache_dir, methods("uniform", "boom", "crash", "crash-once"), "compare.sparsities=[0.5]",
                          "compare.max_retries=1")
    dense_task(config)
    table = run_comparison(config, tmp_path, executor=RayExecutor(config.compare, "cpu"), device="cpu",
                           progress=False)
    rows = {r["label"]: r for r in table.rows}
    assert rows["uniform"]["status"] == "ok" and rows["uniform"]["attempts"] == 1
    # Raised inside the method: retried in the task by execute_cell.
    assert rows["boom"]["status"] == "failed" and rows["boom"]["attempts"] == 2
    assert rows["boom"]["error"].count("RuntimeError: boom") == 2
    # Worker killed: resubmitted by the executor, then a failed row naming the cell and the error.
    assert rows["crash"]["status"] == "failed" and rows["crash"]["attempts"] == 2
    assert "crash-s0.5-seed0" in rows["crash"]["error"] and "attempt 2:" in rows["crash"]["error"]
    assert re.search(r"Worker|died|crash", rows["crash"]["error"].split("failed: ", 1)[1], re.I)
    # Killed once, fine on the resubmission: ok, both attempts counted.
    assert rows["crash-once"]["status"] == "ok" and rows["crash-once"]["attempts"] == 2
    assert invocations() == {"boom-s0.5-seed0": 2, "crash-s0.5-seed0": 2, "crash-once-s0.5-seed0": 2,
                                     "uniform-s0.5-seed0": 1}


def test_resume_runs_only_missing_cells(cache_dir: Path, tmp_path: Path, runners) -> None:
    config = quick_config(cache_dir)
    dense_task(config)
    subset = quick_config(cache_dir, "compare.sparsities=[0.5]")
    run_comparison(subset, tmp_path, executor=RayExecutor(subset.compare, "cpu"), device="cpu",
                   progress=False)
    # A failed row is not finished: the re-run must redo it.
    table = ResultsTable(tmp_path / "results.csv")
    failed = dict(table.rows[0], label="global", method="global", target_sparsity=0.9, status="failed",
                  error="earlier failure")
    table.add(failed)
    reset_ledger()
    ran: list[str] = []
    table = run_comparison(config, tmp_path, executor=RayExecutor(config.compare, "cpu"), device="cpu",
                           progress=False, report=lambda outcome, done, total: ran.append(outcome.cell.slug))
    assert sorted(ran) == ["global-s0.9-seed0", "uniform-s0.9-seed0"]
    assert invocations() == {"global-s0.9-seed0": 1, "uniform-s0.9-seed0": 1}
    assert len(table.rows) == 4 and all(r["status"] == "ok" for r in table.rows)


def test_without_ray_one_clear_message(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(PurlError, match=re.escape(NO_RAY)) as info:
        RayExecutor(quick_config(cache_dir).compare, "cpu")
    assert str(info.value) == "the ray executor needs Ray: pip install -e '.[ray]'"


def test_worker_device_and_attempt_bookkeeping(cache_dir: Path) -> None:
    config = quick_config(cache_dir)
    auto = quick_config(cache_dir, "device=auto")
    cell = Cell("uniform", RUNNER, 0.5, 0)
    spec = config.compare.method_specs()[0]

    def job(cfg, device):
        return CellJob(cfg, cell, spec, Path("x"), RUNNER, device, max_retries=2)

    assert worker_device(job(config, "cpu"), 0.5) == "cpu"  # an explicit CPU run stays on the CPU
    assert worker_device(job(config, "cuda:1"), 0.0) == "cuda:1"  # no GPU requested: Ray hides none
    assert worker_device(job(config, "cuda:1"), 0.25) == "cuda"  # the task's own (only visible) GPU
    assert worker_device(job(auto, "cpu"), 1.0) == "cuda"  # auto on a GPU-less driver, GPU workers
    failed = CellOutcome(cell, {"attempts": 1, "status": "failed", "error": "attempt 1: ValueError: x"}, failed=True,
                         messages=["attempt 1: ValueError: x"])
    merged = merge_failures(failed, ["attempt 1: WorkerCrashedError: died", "attempt 2: WorkerCrashedError: died"])
    assert merged.row["attempts"] == 3
    assert merged.row["error"].endswith("attempt 3: ValueError: x") and merged.failed


@pytest.mark.skipif(importlib.util.find_spec("purl.baselines") is None
                    or importlib.util.find_spec("purl.baselines.run") is None, reason="baselines.run not written yet")
def test_cli_real_baselines_ray_matches_local(cache_dir: Path, tmp_path: Path, ray_session, capsys) -> None:
    from purl.cli.main import main

    common = ["compare", "-q", "--device", "cpu", f"cache_dir={cache_dir}", "pretrain.epochs=2",
              "finetune.max_steps=5", "compare.methods=[global-mp,uniform]", "compare.sparsities=[0.5,0.9]",
              "compare.seeds=[0]"]
    assert main([*common, "--output", str(tmp_path / "local")]) == 0
    assert main([*common, "--executor", "ray", "--output", str(tmp_path / "ray")]) == 0
    capsys.readouterr()
    assert_same_rows(ResultsTable(tmp_path / "local" / "results.csv").rows,
                     ResultsTable(tmp_path / "ray" / "results.csv").rows)


def test_cell_files_travel_to_the_driver_and_never_leave_the_cell_folder(tmp_path: Path) -> None:
    from purl.compare.ray_executor import pack_folder, unpack_folder

    scratch = tmp_path / "worker" / "agent-s0.9-seed0"
    (scratch / "tb").mkdir(parents=True)
    (scratch / "checkpoint.pt").write_bytes(b"\x00\x01weights")
    (scratch / "tb" / "events.out").write_bytes(b"log")
    files = pack_folder(scratch)
    assert files == {"checkpoint.pt": b"\x00\x01weights", "tb/events.out": b"log"}
    cell = tmp_path / "out" / "cells" / "agent-s0.9-seed0"
    unpack_folder(files, cell)
    assert pack_folder(cell) == files and pack_folder(tmp_path / "missing") == {}
    with pytest.raises(PurlError, match="outside its cell folder"):
        unpack_folder({"../../escape.txt": b"x"}, cell)
    assert not (tmp_path / "out" / "escape.txt").exists()
