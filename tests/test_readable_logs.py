"""Readable logs: in a log file progress is plain periodic lines (no ``\\r`` updates), on a terminal a result
line never shares a line with a progress bar, and ``purl compare`` says where the agent cells' TensorBoard logs
are (:mod:`purl.progress`)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from purl import progress
from purl.progress import NullProgress, PlainProgress, progress_bar, write

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "configs" / "quick.yaml")
TINY_AGENT = ["pretrain.epochs=3", "env.val_samples=100", "finetune.max_steps=5", "agent.rerank_candidates=0",
              "agent.hyperparams={n_steps: 6, batch_size: 6}", "device=cpu"]


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def rendered_lines(text: str) -> list[str]:
    """What a terminal shows for ``text``: ``\\r`` returns to the line start and later characters overwrite."""
    lines = []
    for raw in text.split("\n"):
        line: list[str] = []
        col = 0
        for char in raw:
            if char == "\r":
                col = 0
                continue
            if col < len(line):
                line[col] = char
            else:
                line.append(char)
            col += 1
        lines.append("".join(line).rstrip())
    return lines


def _run_to_file(argv: list[str], tmp_path: Path, log: Path, timeout: int = 300) -> str:
    """Run ``python -m purl.cli.main argv`` with stdout and stderr into one file (no terminal, buffered stdout)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"} | {"HOME": str(tmp_path),
                                                                              "OMP_NUM_THREADS": "1"}
    with log.open("w") as handle:
        proc = subprocess.run([sys.executable, "-m", "purl.cli.main", *argv], cwd=tmp_path, env=env,
                              stdout=handle, stderr=subprocess.STDOUT, timeout=timeout)
    text = log.read_bytes().decode()  # not read_text(): universal newlines would turn "\r" into "\n"
    assert proc.returncode == 0, text
    return text


def test_purl_compare_log_file_has_no_carriage_returns_and_result_lines_start_lines(tmp_path: Path) -> None:
    out = tmp_path / "grid"
    text = _run_to_file(["compare", "--config", QUICK, "-o", str(out), f"cache_dir={tmp_path / 'cache'}",
                         *TINY_AGENT, "agent.total_timesteps=12", "compare.methods=[agent, global-mp]",
                         "compare.sparsities=[0.5, 0.75]", "compare.seeds=[0]"], tmp_path, tmp_path / "compare.log")
    assert "\r" not in text
    lines = text.splitlines()
    results = [line for line in lines if re.search(r"\[\d+/\d+\]", line)]
    assert len(results) == 4, text
    assert all(re.match(r"\[\d+/4\] ", line) for line in results), results  # each at the start of its line
    assert "pretrain: " in text and re.search(r"^pretrain: \d+/\d+ steps \(100%\)", text, re.M), text
    tensorboard = [line for line in lines if line.startswith("TensorBoard: ")]
    assert tensorboard == [f"TensorBoard: tensorboard --logdir {out / 'cells'}  (2 agent cell(s), each in "
                           f"{out / 'cells'}/<cell>/tb)"], text
    for target in ("0.5", "0.75"):
        assert list((out / "cells" / f"agent-s{target}-seed0" / "tb").glob("events.out.tfevents.*"))


def test_purl_train_log_file_has_periodic_plain_progress_lines(tmp_path: Path) -> None:
    out = tmp_path / "run"
    text = _run_to_file(["train", "--config", QUICK, "-o", str(out), f"cache_dir={tmp_path / 'cache'}",
                         *TINY_AGENT, "agent.total_timesteps=30"], tmp_path, tmp_path / "train.log")
    assert "\r" not in text
    search = [line for line in text.splitlines() if re.match(r"search: \d+/\d+ steps", line)]
    assert search and search[-1].startswith("search: 30/30 steps (100%)"), text
    assert "|" not in text and "it/s" not in text and "step/s" not in text, text  # no tqdm bar anywhere


def test_a_grid_without_agent_cells_names_no_tensorboard_folder(tmp_path: Path) -> None:
    text = _run_to_file(["compare", "--config", QUICK, "-o", str(tmp_path / "grid"), "--quiet",
                         f"cache_dir={tmp_path / 'cache'}", *TINY_AGENT, "compare.methods=[global-mp]",
                         "compare.sparsities=[0.5]", "compare.seeds=[0]"], tmp_path, tmp_path / "compare.log")
    assert "TensorBoard" not in text and "\r" not in text


def test_plain_progress_prints_a_line_per_tenth_and_a_last_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "MIN_SECONDS", 0.0)
    stream = io.StringIO()
    bar = progress_bar(50, desc="search", unit="step", file=stream)
    assert isinstance(bar, PlainProgress)
    for _ in range(50):
        bar.update(1)
    bar.set_postfix(loss="0.125")
    bar.close()
    bar.close()  # idempotent
    lines = stream.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == [f"search: {n}/50 steps ({2 * n}%)" for n in range(5, 51, 5)]
    assert "\r" not in stream.getvalue()


def test_plain_progress_is_rate_limited_but_always_ends_with_a_line() -> None:
    stream = io.StringIO()
    bar = progress_bar(1000, desc="finetune", unit="step", initial=100, file=stream)
    for _ in range(900):
        bar.update(1)  # far faster than MIN_SECONDS: no intermediate line
    bar.set_postfix(loss="0.5")
    bar.close()
    assert stream.getvalue().count("\n") == 1
    assert stream.getvalue().startswith("finetune: 1000/1000 steps (100%), ") and "loss=0.5" in stream.getvalue()


def test_disabled_or_silent_off_terminal_prints_nothing() -> None:
    stream = io.StringIO()
    assert isinstance(progress_bar(10, desc="x", enabled=False, file=stream), NullProgress)
    silent = progress_bar(10, desc="compare", plain=False, file=stream)
    silent.update(10)
    silent.close()
    assert type(silent) is NullProgress and silent.n == 10 and stream.getvalue() == ""


def test_on_a_terminal_a_written_line_never_shares_the_bars_line() -> None:
    terminal = Terminal()
    bar = progress_bar(4, desc="compare", unit="cell", leave=True, file=terminal)
    assert not isinstance(bar, NullProgress)  # a tqdm bar
    bar.update(1)
    write("[1/4] agent @ 0.5 seed 0: top-1 96.44%", file=terminal)
    bar.update(1)
    write("[2/4] global-mp @ 0.5 seed 0: top-1 96.88%", file=terminal)
    bar.close()
    shown = rendered_lines(terminal.getvalue())
    assert "[1/4] agent @ 0.5 seed 0: top-1 96.44%" in shown
    assert "[2/4] global-mp @ 0.5 seed 0: top-1 96.88%" in shown
    assert any(line.startswith("compare:") for line in shown)  # the bar is on its own line
