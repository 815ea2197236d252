"""`fedehr site status` tells hospital IT what was sent, when, and the budget left."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest
import yaml
from typer.testing import CliRunner

from fedehr.client import activity
from fedehr.client.cli import app

PRIVACY = {"epsilon": 8.0, "delta": 1e-5, "accountant": "rdp"}  # required in every site.yaml


def test_status_lists_ledger_charges_and_recent_messages(tmp_path):
    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump({"name": "hospital_a", "data": "meds", "state_dir": "state",
                                      "insecure": True, "privacy": {"epsilon": 4.0, "delta": 1e-5,
                                                                  "accountant": "rdp"}}))
    from fedehr.client.config import load_site_config
    from fedehr.client.site_handlers import open_ledger

    site = load_site_config(config)
    ledger = open_ledger(site)
    ledger.charge(2.0, 0.1, 20, purpose="dp-sgd", round_id="fed/round-1:abc")
    activity.record(site.state_dir, "train", round_id="fed/round-1", steps=20, patients=300,
                    examples=600, seconds=2.0, epsilon=ledger.spent())
    activity.record(site.state_dir, "refusal", reason="budget spent")
    result = CliRunner().invoke(app, ["status", "--config", str(config)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "of 4 (remaining" in result.output and "fed/round-1:abc" in result.output
    assert "20 DP steps, 300 patients" in result.output and "budget spent" in result.output


def test_status_lists_evaluations_that_released_no_loss(tmp_path):
    config = _site(tmp_path)
    activity.record(tmp_path / "state", "evaluate", round_id="fed/round-1", released=False)
    activity.record(tmp_path / "state", "evaluate", round_id="fed/round-2", released="noised",
                    epsilon=0.25)
    output = _status(config)
    assert "no loss released" in output and "noised held-out loss, epsilon now 0.250" in output


def _site(tmp_path, superlink: str = "127.0.0.1:9093"):
    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump({"name": "hospital_a", "data": "meds", "state_dir": "state",
                                      "insecure": True, "superlink": superlink,
                                      "privacy": PRIVACY}))
    return config


def _status(config) -> str:
    result = CliRunner().invoke(app, ["status", "--config", str(config)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    return result.output


def test_status_says_the_daemon_is_not_running_when_its_pid_file_is_stale(tmp_path):
    config = _site(tmp_path)
    (tmp_path / "state").mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "state" / "site.pid").write_text(json.dumps({"daemon": dead.pid}))
    assert "daemon: not running (start it: fedehr site start" in _status(config)


@pytest.fixture
def superlink_port():
    """A listening TCP socket standing where the SuperLink would be."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def test_status_says_since_when_the_daemon_runs_and_that_its_supernode_is_connected(
        tmp_path, superlink_port):
    config = _site(tmp_path, f"127.0.0.1:{superlink_port}")
    hold = ("import socket, sys, time; s = socket.create_connection(('127.0.0.1', "
            f"{superlink_port})); print('up', flush=True); time.sleep(60)")
    daemon = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    supernode = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
    try:
        assert supernode.stdout.readline() == "up\n"
        (tmp_path / "state").mkdir()
        (tmp_path / "state" / "site.pid").write_text(json.dumps(
            {"daemon": daemon.pid, "supernode-hospital_a": supernode.pid}))
        line = next(x for x in _status(config).splitlines() if x.startswith("daemon:"))
        assert line.startswith(f"daemon: running since {time.strftime('%Y', time.gmtime())}")
        assert f"(pid {daemon.pid}); its SuperNode is connected to 127.0.0.1:" in line
        supernode.kill()
        supernode.wait()
        assert "its SuperNode is not running" in _status(config)
    finally:
        for proc in (daemon, supernode):
            proc.kill()
            proc.wait()
