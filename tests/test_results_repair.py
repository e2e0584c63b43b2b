"""A damaged ``results.csv``: `purl compare` repairs it (backup kept, damaged cells re-run), `purl report` copes."""

from __future__ import annotations

from pathlib import Path

import pytest

from purl.compare import ResultsTable
from purl.compare.cells import parse_results
from purl.errors import ResultsError

TINY = ["pretrain.epochs=2", "finetune.epochs=1", "finetune.max_steps=3", "compare.sparsities=[0.5,0.75]",
        "compare.seeds=[0]", "compare.methods=[global-mp,uniform]", "compare.profile_sparsity=0.5"]


def _compare(run_cli, tmp_path: Path, out: Path):
    return run_cli("compare", "--config", "configs/quick.yaml", "-q", "--device", "cpu", "-o", out,
                   f"cache_dir={tmp_path / 'cache'}", *TINY)


def _cut_last_line(text: str) -> str:
    lines = text.splitlines(keepends=True)
    return "".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 3]


def _cut_inside_json(text: str) -> str:
    lines = text.splitlines(keepends=True)
    last = lines[-1]
    return "".join(lines[:-1]) + last[: last.index('"{') + 8]  # inside the quoted layer_sparsity JSON


GARBAGE = b"\x00\x01garbage,,\nnot,a,table\n\xff\xfe"


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A finished 4-cell comparison (its folder and the good results.csv text), run once for this module."""
    from purl.cli.main import main

    tmp = tmp_path_factory.mktemp("finished")
    out = tmp / "cmp"
    rc = main(["compare", "--config", "configs/quick.yaml", "-q", "--device", "cpu", "-o", str(out),
               f"cache_dir={tmp / 'cache'}", *TINY])
    assert rc == 0
    return tmp, (out / "results.csv").read_text()


# ------------------------------------------------------------------------------ reading


@pytest.mark.parametrize("damage", [_cut_last_line, _cut_inside_json])
def test_parse_keeps_good_rows_and_names_the_damaged_one(finished, tmp_path: Path, damage) -> None:
    _, good = finished
    path = tmp_path / "results.csv"
    path.write_text(damage(good))
    parsed = parse_results(path)
    assert len(parsed.rows) == 3 and len(parsed.damaged) == 1 and "line 5" in parsed.damaged[0]
    assert parsed.rows == parse_results(_write(tmp_path / "good.csv", good)).rows[:3]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("content", [GARBAGE, b"", b"just one line of prose\n"])
def test_not_a_results_table_is_a_results_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "results.csv"
    path.write_bytes(content)
    with pytest.raises(ResultsError, match="not a PuRL results table"):
        ResultsTable.read(path)


def test_read_warns_once_and_returns_the_good_rows(finished, tmp_path: Path, capsys) -> None:
    _, good = finished
    path = _write(tmp_path / "results.csv", _cut_last_line(good))
    assert len(ResultsTable.read(path)) == 3
    assert len(ResultsTable.read(path)) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning:") and "1 damaged row" in err[0]


def test_repair_backs_up_and_never_overwrites_an_earlier_backup(finished, tmp_path: Path, monkeypatch) -> None:
    import purl.compare.cells as cells

    _, good = finished
    monkeypatch.setattr(cells.time, "strftime", lambda fmt, t=None: "20000101-000000")
    path = tmp_path / "results.csv"
    first, second = _cut_last_line(good), _cut_inside_json(good)
    for damaged in (first, second):
        path.write_text(damaged)
        table = ResultsTable(path)
        note = table.repair()
        assert note is not None and "kept the 3 good rows" in note and str(table.backup) in note
    backups = sorted(tmp_path.glob("results.csv.damaged-*"))
    assert [b.name for b in backups] == ["results.csv.damaged-20000101-000000", "results.csv.damaged-20000101-000000-1"]
    assert backups[0].read_text() == first and backups[1].read_text() == second
    assert parse_results(path).damaged == [] and len(parse_results(path).rows) == 3
    assert ResultsTable(path).repair() is None  # a good table is left alone


# ------------------------------------------------------------------------------ the CLI


@pytest.mark.parametrize("damage", ["cut last line", "cut inside JSON"])
def test_compare_rerun_repairs_and_reruns_the_damaged_cell(run_cli, finished, tmp_path: Path, damage) -> None:
    tmp, good = finished
    out = tmp_path / "cmp"
    damaged = (_cut_last_line if damage == "cut last line" else _cut_inside_json)(good)
    out.mkdir()
    _write(out / "results.csv", damaged)
    result = _compare(run_cli, tmp, out)
    assert result.rc == 0, result.err
    assert "Traceback" not in result.err + result.out
    warnings = [line for line in result.err.splitlines() if line.startswith("warning: repaired")]
    assert len(warnings) == 1 and "1 damaged row" in warnings[0] and "kept the 3 good rows" in warnings[0]
    backups = list(out.glob("results.csv.damaged-*"))
    assert len(backups) == 1 and backups[0].read_text() == damaged and str(backups[0]) in warnings[0]
    rows = ResultsTable.read(out / "results.csv")
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    assert "resuming: 3 of 4 cells already finished" in result.out and "running 1" in result.out
    assert "[4/4] uniform @ 0.75" in result.out  # only the damaged cell ran again


def test_compare_rerun_on_a_garbage_results_csv_starts_over_and_keeps_it(run_cli, finished, tmp_path: Path) -> None:
    tmp, _ = finished
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "results.csv").write_bytes(GARBAGE)
    result = _compare(run_cli, tmp, out)
    assert result.rc == 0, result.err
    assert "not a PuRL results table" in result.err and "started an empty table" in result.err
    (backup,) = out.glob("results.csv.damaged-*")
    assert backup.read_bytes() == GARBAGE
    assert len(ResultsTable.read(out / "results.csv")) == 4


@pytest.mark.parametrize("damage", [_cut_last_line, _cut_inside_json])
def test_report_on_a_damaged_table_uses_the_good_rows(run_cli, finished, damage) -> None:
    tmp, good = finished
    out = tmp / "cmp"
    (out / "results.csv").write_text(damage(good))
    try:
        result = run_cli("report", out)
    finally:
        (out / "results.csv").write_text(good)
    assert result.rc == 0, result.err
    assert "Traceback" not in result.err
    assert any(line.startswith("warning:") and "1 damaged row" in line for line in result.err.splitlines())


@pytest.mark.parametrize("content", [GARBAGE, b""])
def test_report_on_a_garbage_table_is_one_error_line(run_cli, tmp_path: Path, content: bytes) -> None:
    (tmp_path / "results.csv").write_bytes(content)
    result = run_cli("report", tmp_path)
    assert result.rc == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("purl report: error:") and "results table" in lines[0]
    assert (tmp_path / "results.csv").read_bytes() == content  # report never rewrites the table


def test_report_with_a_header_but_no_readable_row_is_one_error_line(run_cli, finished, tmp_path: Path) -> None:
    _, good = finished
    header, first = good.splitlines(keepends=True)[:2]
    (tmp_path / "results.csv").write_text(header + first[:40])
    result = run_cli("report", tmp_path)
    assert result.rc == 2 and "Traceback" not in result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "no readable rows" in lines[0] and "purl compare" in lines[0]
