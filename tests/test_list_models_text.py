"""``purl list`` prints plain text (no reStructuredText markup from docstrings), and ``purl list models``
says which layer families pruning covers."""

from __future__ import annotations

import pytest

from purl.cli.listing import plain_text


@pytest.mark.parametrize(
    ("rst", "plain"),
    [
        ("per width in ``hidden`` (default [256, 128])", "per width in hidden (default [256, 128])"),
        ("see :class:`~purl.task.Task`", "see Task"),
        ("see :func:`purl.models.build_model`", "see purl.models.build_model"),
        (":ref:`the guide <guide-label>` and `x`", "the guide and x"),
        ("two\n   lines", "two lines"),
        ("no markup: a < b, 'quoted'", "no markup: a < b, 'quoted'"),
    ],
)
def test_plain_text(rst: str, plain: str) -> None:
    assert plain_text(rst) == plain


def test_list_models_has_no_markup_and_states_pruning_coverage(run_cli) -> None:
    result = run_cli("list", "models")
    assert result.rc == 0, result.err
    assert "`" not in result.out and ":class:" not in result.out
    assert "per width in hidden (default" in result.out
    coverage = result.out.split("pruning covers:", 1)[1]
    for family in ("Conv2d", "Linear", "MultiheadAttention", "in_proj_weight", "Never pruned", "biases"):
        assert family in coverage


def test_list_all_has_no_markup(run_cli) -> None:
    result = run_cli("list", "--configs-dir", "configs")
    assert result.rc == 0, result.err
    assert "``" not in result.out and ":class:`" not in result.out and ":func:`" not in result.out
