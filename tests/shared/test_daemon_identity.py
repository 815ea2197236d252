"""A daemon acts only on its own processes: a stale PID file never gets an unrelated
process signalled, and a second daemon on one state folder is refused at once
(issue 18, section 3)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import yaml

from fedehr.shared.processes import (
    DAEMON,
    IDENTITIES,
    ProcessError,
    _running,
    daemon_state,
    process_identity,
    same_process,
    stop_from_pidfile,
)

HOLD_LOCK = """
import sys, time
from pathlib import Path
from fedehr.shared.processes import hold_daemon_lock
hold_daemon_lock(Path(sys.argv[1]), "the daemon of site a")
print("locked", flush=True)
time.sleep(60)
"""


@pytest.fixture
def scratch(tmp_path):
    folder = tmp_path / "Zustand Ä ö"
    folder.mkdir()
    return folder


@pytest.fixture
def bystander():
    """An unrelated process whose PID a stale PID file happens to name."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                            start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def test_a_stale_pid_file_naming_an_unrelated_process_signals_nothing(scratch, bystander):
    pidfile = scratch / "site.pid"
    recorded = {"start": "1", "cmdline": "fedehr site start"}  # the crashed daemon's
    pidfile.write_text(json.dumps({DAEMON: bystander.pid, "supernode-a": bystander.pid,
                                   IDENTITIES: {DAEMON: recorded, "supernode-a": recorded}}))
    assert stop_from_pidfile(pidfile) == []
    time.sleep(0.2)
    assert bystander.poll() is None, "the unrelated process was killed"
    assert not pidfile.exists(), "the stale PID file is removed"


def test_an_old_pid_file_without_identities_signals_nothing(scratch, bystander):
    pidfile = scratch / "site.pid"
    pidfile.write_text(json.dumps({DAEMON: bystander.pid}))
    assert stop_from_pidfile(pidfile) == []
    assert bystander.poll() is None


def test_status_does_not_take_a_reused_pid_for_the_daemon(scratch, bystander):
    pidfile = scratch / "site.pid"
    pidfile.write_text(json.dumps({DAEMON: bystander.pid,
                                   IDENTITIES: {DAEMON: {"start": "1", "cmdline": "x"}}}))
    assert not daemon_state(pidfile).running


def test_identity_matches_the_same_process_only(bystander):
    identity = process_identity(bystander.pid)
    assert same_process(bystander.pid, identity)
    assert not same_process(bystander.pid, {**identity, "start": "0"})
    assert not same_process(bystander.pid, {**identity, "cmdline": "another program"})
    # read mid-exec, before the kernel set up the arguments: the start time decides
    assert same_process(bystander.pid, {**identity, "cmdline": ""})
    assert not same_process(bystander.pid, None)


def test_a_second_daemon_on_one_state_folder_is_refused_with_the_holders_pid(scratch):
    from fedehr.shared.processes import hold_daemon_lock

    pidfile = scratch / "site.pid"
    first = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(pidfile)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline() == "locked\n"
        with pytest.raises(ProcessError, match=f"already runs .*pid {first.pid}"):
            hold_daemon_lock(pidfile, "the daemon of site a")
    finally:
        first.kill()
        first.wait()
    assert not _running(first.pid)


def test_site_start_refuses_at_once_while_another_daemon_holds_its_state(scratch, capsys):
    from tests.fixtures.cli import run_fedehr

    state = scratch / "state"
    config = scratch / "site.yaml"
    config.write_text(yaml.safe_dump({
        "name": "hospital_a", "data": str(scratch / "meds"), "state_dir": str(state),
        "insecure": True, "superlink": "127.0.0.1:9092",
        "privacy": {"epsilon": 8.0, "delta": 1e-5, "accountant": "rdp"}}))
    first = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(state / "site.pid")],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline() == "locked\n"
        secret_before = sorted(p.name for p in state.iterdir())
        result = run_fedehr(capsys, "site", "start", "--config", config)
        assert result.code != 0 and f"pid {first.pid}" in result.err
        assert sorted(p.name for p in state.iterdir()) == secret_before, "touched nothing"
    finally:
        first.kill()
        first.wait()
