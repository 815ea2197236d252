"""Daemon output as JSON lines on request, and user errors in the same form."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from rich.table import Table

from fedehr.shared import logs

FEDEHR = str(Path(sys.executable).parent / "fedehr")


def test_text_mode_prints_rich_markup(monkeypatch, capsys):
    monkeypatch.delenv(logs.ENV, raising=False)
    logs.DaemonConsole("fedehr.test.text").print("SuperLink on [bold]x:1[/]")
    assert capsys.readouterr().out.strip() == "SuperLink on x:1"


def test_json_mode_writes_one_object_per_message_with_fields(monkeypatch, capsys):
    monkeypatch.setenv(logs.ENV, "json")
    say = logs.DaemonConsole("fedehr.test.json")
    say.print("SuperLink on [bold]x:1[/]", port=1)
    say.warn("retrying")
    table = Table("site", "registered")
    table.add_row("hospital_a", "yes")
    say.print(table)
    first, second, third = (json.loads(x) for x in capsys.readouterr().out.splitlines())
    assert first["message"] == "SuperLink on x:1" and first["port"] == 1
    assert first["level"] == "info" and first["logger"] == "fedehr.test.json"
    assert second["level"] == "warning"
    assert "hospital_a" in third["message"] and "\n" in third["message"]


def test_an_unknown_format_is_a_configuration_error(monkeypatch):
    monkeypatch.setenv(logs.ENV, "xml")
    with pytest.raises(logs.ConfigError, match="FEDEHR_LOG_FORMAT"):
        logs.log_format()


def test_a_user_error_in_json_mode_is_one_json_line_on_stderr(tmp_path):
    done = subprocess.run([FEDEHR, "--log-format", "json", "site", "status", "--config",
                           str(tmp_path / "missing.yaml")], capture_output=True, text=True)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    error = json.loads(done.stderr.strip().splitlines()[-1])
    assert error["level"] == "error" and "missing.yaml" in json.dumps(error)
