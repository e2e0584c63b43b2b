"""`purl prune/compare/pretrain` against bad input: unwritable output, empty configs, sparsity 1.0,
no empty folder left by an early failure, the resume line, and the corrupt dense-cache hint."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

import pytest
from cli_checks import one_line_error

QUICK = "configs/quick.yaml"
FAST = ["pretrain.epochs=2", "finetune.epochs=1", "finetune.max_steps=3"]
GRID = ["compare.methods=[global-mp]", "compare.seeds=[0]", "compare.sparsities=[0.5]"]




def cli(run_cli, command: str, tmp_path: Path, out: Path, *extra: str, config: str | Path = QUICK):
    return run_cli(command, "--config", config, "-q", "--device", "cpu", "-o", out,
                   f"cache_dir={tmp_path / 'cache'}", *FAST, *extra)


@pytest.fixture
def no_heavy_work(monkeypatch):
    """Fail the test if a task (data + dense model) is built: the error must come before any work."""
    import purl.task

    def forbidden(*args, **kwargs):
        raise AssertionError("build_task ran although the output could not be written")

    monkeypatch.setattr(purl.task, "build_task", forbidden)


# ------------------------------------------------------------------------------ 2. unwritable output


@pytest.mark.parametrize("command", ["prune", "compare"])
def test_read_only_output_folder_fails_before_any_work(run_cli, tmp_path: Path, no_heavy_work, command) -> None:
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)  # 0o555
    try:
        if os.access(out, os.W_OK):
            pytest.skip("running as root: chmod 0o555 does not stop writes (see the simulated variant below)")
        result = cli(run_cli, command, tmp_path, out, *GRID)
    finally:
        out.chmod(0o755)
    one_line_error(result, command, "cannot write to output folder", str(out))


@pytest.mark.parametrize("command", ["prune", "compare", "pretrain"])
def test_unwritable_output_folder_simulated_fails_before_any_work(run_cli, tmp_path: Path, monkeypatch,
                                                                  no_heavy_work, command) -> None:
    """The same check with the write refused by the file system (works as root too)."""
    out = tmp_path / "out"

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    result = cli(run_cli, command, tmp_path, out, *GRID)
    one_line_error(result, command, "cannot write to output folder", str(out), "Read-only file system")
    assert not out.exists()


def test_full_disk_fails_before_any_work(run_cli, tmp_path: Path, monkeypatch, no_heavy_work) -> None:
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=0))
    one_line_error(cli(run_cli, "prune", tmp_path, tmp_path / "out"), "prune", "no space left", "out")


def _fail_writes_of(monkeypatch, name: str) -> None:
    """Make every atomic write of a file called ``name`` fail like a full disk, inside the writer."""
    real = tempfile.mkstemp

    def full(*args, prefix=None, **kwargs):
        if prefix is not None and prefix.startswith(f".{name}."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, prefix=prefix, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", full)


def test_late_write_failure_of_prune_is_one_line_and_keeps_earlier_files(run_cli, tmp_path: Path,
                                                                          monkeypatch) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text('{"earlier": "run"}\n')
    _fail_writes_of(monkeypatch, "pruned.pt")
    result = cli(run_cli, "prune", tmp_path, out)
    one_line_error(result, "prune", "cannot write", "pruned.pt", "No space left on device")
    assert (out / "results.json").read_text() == '{"earlier": "run"}\n'
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]  # no temporary file left


def test_late_write_failure_in_a_new_folder_leaves_no_empty_folder(run_cli, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "new" / "out"
    _fail_writes_of(monkeypatch, "pruned.pt")
    one_line_error(cli(run_cli, "prune", tmp_path, out), "prune", "No space left on device")
    assert not (tmp_path / "new").exists()


def test_late_write_failure_of_compare_results_is_one_line(run_cli, tmp_path: Path, monkeypatch) -> None:
    _fail_writes_of(monkeypatch, "results.csv")
    result = cli(run_cli, "compare", tmp_path, tmp_path / "out", *GRID)
    one_line_error(result, "compare", "cannot write", "results.csv", "No space left on device")


def test_unwritable_dense_cache_fails_before_pretraining(run_cli, tmp_path: Path, monkeypatch) -> None:
    import purl.training

    real = tempfile.TemporaryFile

    def refuse_in_cache(*args, dir=None, **kwargs):  # noqa: A002 - tempfile's own keyword
        if dir is not None and Path(dir) == tmp_path / "cache" / "dense":
            raise OSError(errno.EACCES, "Permission denied")
        return real(*args, dir=dir, **kwargs)

    def no_training(*args, **kwargs):
        raise AssertionError("pre-training ran although its result could not be cached")

    (tmp_path / "cache" / "dense").mkdir(parents=True)
    monkeypatch.setattr(tempfile, "TemporaryFile", refuse_in_cache)
    monkeypatch.setattr(purl.training, "train", no_training)
    monkeypatch.setattr("purl.task.train", no_training)
    result = cli(run_cli, "pretrain", tmp_path, tmp_path / "out")
    one_line_error(result, "pretrain", "cannot write to dense-model cache folder", "Permission denied")


def test_output_path_through_a_file_is_one_line(run_cli, tmp_path: Path, no_heavy_work) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    one_line_error(cli(run_cli, "prune", tmp_path, blocker / "sub"), "prune", "file.txt", "is a file")
    assert blocker.read_text() == "x"


# ------------------------------------------------------------------------------ 3. empty config files


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n# and another\n", "null\n", "~\n"])
@pytest.mark.parametrize("command", ["prune", "compare"])
def test_empty_config_file_is_an_error(run_cli, tmp_path: Path, no_heavy_work, text: str, command: str) -> None:
    config = tmp_path / "empty.yaml"
    config.write_text(text)
    out = tmp_path / "out"
    one_line_error(cli(run_cli, command, tmp_path, out, config=config), command, "empty.yaml", "is empty")
    assert not out.exists()


def test_empty_config_file_in_load_config(tmp_path: Path) -> None:
    from purl.config import load_config
    from purl.errors import ConfigError

    (tmp_path / "c.yaml").write_text("# nothing\n")
    with pytest.raises(ConfigError, match="is empty"):
        load_config(tmp_path / "c.yaml")
    assert load_config(None).name == "experiment"  # no file at all still means the built-in defaults


# ------------------------------------------------------------------------------ 4. sparsity 1.0


def test_prune_rejects_sparsity_one_with_the_rule_compare_uses(run_cli, tmp_path: Path, no_heavy_work) -> None:
    out = tmp_path / "out"
    prune = one_line_error(cli(run_cli, "prune", tmp_path, out, "--sparsity", "1.0"), "prune", "prune.sparsity")
    compare = one_line_error(cli(run_cli, "compare", tmp_path, out, "compare.sparsities=[1.0]"), "compare",
                             "compare.sparsities")
    assert "[0, 1)" in prune
    assert prune.split("': ", 1)[1] == compare.split("': ", 1)[1]  # the same message after the key
    assert not out.exists()


@pytest.mark.parametrize("value", ["0.0", "0.99"])
def test_prune_sparsity_bounds_that_stay_valid(make_config, value: str) -> None:
    assert make_config(f"prune.sparsity={value}").prune.sparsity == float(value)


# ------------------------------------------------------------------------------ 5. no empty output folder


@pytest.mark.parametrize("command", ["prune", "compare", "pretrain"])
@pytest.mark.parametrize("bad", ["model.name=no-such-model", "data.name=cifar10"])
def test_early_failure_leaves_no_output_folder(run_cli, tmp_path: Path, command: str, bad: str) -> None:
    out = tmp_path / "runs" / "x" / command
    result = cli(run_cli, command, tmp_path, out, *GRID, bad, f"data.root={tmp_path / 'no-data'}")
    one_line_error(result, command, "no-such-model" if "model" in bad else "not found")
    assert not (tmp_path / "runs").exists()


def test_early_failure_keeps_an_existing_output_folder(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("{}\n")
    one_line_error(cli(run_cli, "prune", tmp_path, out, "model.name=no-such-model"), "prune", "no-such-model")
    assert (out / "results.json").read_text() == "{}\n"


# ------------------------------------------------------------------------------ 6. the resume line


def test_compare_rerun_says_it_resumes(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    first = cli(run_cli, "compare", tmp_path, out, *GRID)
    assert first.rc == 0, first.err
    assert "resuming" not in first.out
    second = cli(run_cli, "compare", tmp_path, out, *GRID[:-1], "compare.sparsities=[0.5,0.75]")
    assert second.rc == 0, second.err
    assert f"resuming: 1 of 2 cells already finished in {out / 'results.csv'}, running 1" in second.out
    assert "[2/2] global-mp @ 0.75" in second.out


# ------------------------------------------------------------------------------ 7. corrupt dense cache


def test_corrupt_dense_cache_names_the_fix_and_the_fix_works(run_cli, make_config, tmp_path: Path) -> None:
    from purl.task import dense_checkpoint_path

    cached = dense_checkpoint_path(make_config(f"cache_dir={tmp_path / 'cache'}", *FAST))
    cached.parent.mkdir(parents=True)
    cached.write_bytes(os.urandom(500))
    line = one_line_error(cli(run_cli, "prune", tmp_path, tmp_path / "p"), "prune", "corrupt", str(cached))
    assert "purl pretrain --retrain" in line
    assert "weights_only" not in line  # torch's paragraph is cut to its first sentence
    assert cli(run_cli, "pretrain", tmp_path, tmp_path / "pt", "--retrain").rc == 0
    assert cli(run_cli, "prune", tmp_path, tmp_path / "p").rc == 0
