"""`fedehr registry start` stops on Ctrl-C and on `fedehr registry stop`, like the other
daemons (issue 17, defect 2)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedehr.server.registry.cli import pidfile
from fedehr.shared.cli import build_app
from tests.shared.registry.consortium import make_pki

FEDEHR = str(Path(sys.executable).parent / "fedehr")


@pytest.fixture
def registry(tmp_path):
    """A `fedehr registry start` process serving an empty workdir on a free port."""
    pki, workdir = make_pki(tmp_path / "pki"), tmp_path / "fed"
    workdir.mkdir()
    proc = subprocess.Popen([FEDEHR, "registry", "start", "--workdir", str(workdir),
                             "--pki", str(pki), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not pidfile(workdir).exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.1)
    yield proc, workdir
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_ctrl_c_stops_the_registry_in_order(registry):
    proc, workdir = registry
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0
    assert "registry stopped" in proc.stdout.read()
    assert not pidfile(workdir).exists()


def test_registry_stop_ends_a_registry_started_elsewhere(registry):
    proc, workdir = registry
    result = CliRunner().invoke(build_app(), ["registry", "stop", "--workdir", str(workdir)])
    assert result.exit_code == 0 and "stopped: the registry" in result.output
    assert proc.wait(timeout=30) == 0


def test_registry_stop_with_nothing_running_says_so(tmp_path):
    result = CliRunner().invoke(build_app(), ["registry", "stop", "--workdir", str(tmp_path)])
    assert result.exit_code == 0 and "nothing was running" in result.output
