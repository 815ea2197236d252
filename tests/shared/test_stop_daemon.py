"""`fedehr ... stop` ends a foreground daemon in order: the daemon exits 0 and
takes its children with it."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from fedehr.shared.processes import DAEMON, _running, stop_from_pidfile

DAEMON_SCRIPT = """
import sys, time
from pathlib import Path
from fedehr.shared.processes import Supervisor, exit_on_sigterm
exit_on_sigterm()
supervisor = Supervisor(pidfile=Path(sys.argv[1]))
try:
    supervisor.start("child", ["sleep", "120"], log=Path(sys.argv[1]).with_suffix(".log"))
    while supervisor.alive("child"):
        time.sleep(0.1)
    sys.exit(3)  # the child died under us: a failure
finally:
    supervisor.stop_all()
"""


def test_stop_asks_the_daemon_which_stops_its_children_and_exits_zero(tmp_path):
    pidfile = tmp_path / "d.pid"
    daemon = subprocess.Popen([sys.executable, "-c", DAEMON_SCRIPT, str(pidfile)])
    deadline = time.monotonic() + 30
    while not (pidfile.exists() and "child" in json.loads(pidfile.read_text())):
        assert time.monotonic() < deadline and daemon.poll() is None
        time.sleep(0.1)
    pids = json.loads(pidfile.read_text())
    assert pids[DAEMON] == daemon.pid
    assert stop_from_pidfile(pidfile) == [DAEMON, "child"]
    assert daemon.wait(timeout=30) == 0
    assert not _running(pids["child"]) and not pidfile.exists()
