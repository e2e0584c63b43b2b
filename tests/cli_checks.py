"""Shared assertion of the CLI's bad-input convention (imported by the test files; pytest puts tests/ on the path)."""

from __future__ import annotations


def one_line_error(result, command: str, *fragments: str) -> str:  # noqa: ANN001 - conftest's CliResult
    """The single stderr line of a user error (exit 2, no traceback), checked for ``fragments``."""
    assert result.rc == 2, (result.out, result.err)
    assert "Traceback" not in result.err + result.out
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith(f"purl {command}: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]
