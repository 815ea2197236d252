"""`fedehr pki ...` through the root command (the group registered as its entry point would)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from fedehr.shared import cli as root_cli
from fedehr.shared.pki.cli import app as pki_app


@pytest.fixture
def with_pki_group(monkeypatch):
    monkeypatch.setattr(root_cli, "_command_groups", lambda: {"pki": [pki_app]})


def test_missing_ca_is_one_line_telling_to_run_init(with_pki_group, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        root_cli.main(["pki", "server", "--host", "x.example.org", "--dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_info.value.code != 0
    assert "Traceback" not in err and err.startswith("error: ")
    # one message; the root console may soft-wrap it at the terminal width
    assert "run `fedehr pki init --dir" in " ".join(err.split())


@pytest.mark.parametrize("command", ["init", "server", "site", "researcher", "revoke", "list"])
def test_every_command_help_shows_an_example(with_pki_group, command):
    result = CliRunner().invoke(root_cli.build_app(), ["pki", command, "--help"])
    assert result.exit_code == 0
    assert f"Example: fedehr pki {command}" in result.output


def test_list_shows_issued_and_revoked_credentials(with_pki_group, tmp_path):
    runner, app, d = CliRunner(), root_cli.build_app(), str(tmp_path / "pki")
    for args in (["init"], ["site", "st-marys"], ["researcher", "alice"], ["revoke", "alice"]):
        assert runner.invoke(app, ["pki", *args, "--dir", d]).exit_code == 0
    result = runner.invoke(app, ["pki", "list", "--dir", d], env={"COLUMNS": "200"})
    rows = {line.split("│")[2].strip(): line for line in result.output.splitlines()
            if line.count("│") == 6}
    assert {"st-marys", "alice", "consortium"} <= set(rows)
    assert "yes" in rows["alice"] and "no" in rows["st-marys"]


def test_server_and_site_point_to_fedehr_commands_not_raw_flower_ones(with_pki_group, tmp_path):
    runner, app, d = CliRunner(), root_cli.build_app(), str(tmp_path / "pki")
    assert runner.invoke(app, ["pki", "init", "--dir", d]).exit_code == 0
    outputs = [" ".join(runner.invoke(app, ["pki", *args, "--dir", d],
                                      env={"COLUMNS": "300"}).output.split())
               for args in (["server"], ["site", "st-marys"])]
    assert "fedehr server start --config federation.yaml" in outputs[0]
    assert "fedehr server register st-marys" in outputs[1]
    assert not any("flower-superlink" in out or "flwr supernode register" in out
                   for out in outputs)


def test_server_days_sets_the_certificate_validity(with_pki_group, tmp_path):
    import datetime as dt

    from fedehr.shared.pki import PKIPaths
    from fedehr.shared.pki.certificates import load_cert

    runner, app, d = CliRunner(), root_cli.build_app(), str(tmp_path / "pki")
    assert runner.invoke(app, ["pki", "init", "--dir", d]).exit_code == 0
    result = runner.invoke(app, ["pki", "server", "--host", "10.0.0.5", "--days", "7",
                                 "--dir", d])
    assert result.exit_code == 0
    cert = load_cert(PKIPaths.of(d).server_cert)
    left = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=6, hours=23) < left <= dt.timedelta(days=7)
