"""Careless input never crashes a command: messages are printed as text, not markup, and
every numeric option is checked against its range (issue 18, section 4)."""

from __future__ import annotations

import pytest

from tests.fixtures.cli import run_fedehr


@pytest.fixture
def scratch(tmp_path):
    folder = tmp_path / "Daten Ä ü"
    folder.mkdir()
    return folder


def test_an_error_quoting_square_brackets_is_printed_as_written(scratch, capsys):
    (scratch / "a[").mkdir()
    missing = scratch / "a[" / "b]"  # the text "a[/b]" is a closing tag to rich
    result = run_fedehr(capsys, "data", "validate", missing)
    assert result.code != 0
    assert "a[/b]: no such" in (result.out + result.err).replace("\n", "")
