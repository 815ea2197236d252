"""A SuperLink port held by another program fails `fedehr server start` at once, with that
reason, instead of waiting out the start timeout (issue 18, section 6)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from fedehr.server.superlink import start_superlink
from fedehr.shared.processes import ProcessError, Supervisor, wait_for_port


@pytest.fixture
def squatter():
    """Another service listening where the SuperLink should."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def test_a_port_in_use_fails_the_start_at_once_naming_it(tmp_path, squatter):
    supervisor = Supervisor()
    started = time.monotonic()
    with pytest.raises(ProcessError, match=f"127.0.0.1:{squatter} is already in use"):
        start_superlink(supervisor, host="127.0.0.1", port=squatter, pki=None,
                        flwr_home=tmp_path / "flwr home ä", log=tmp_path / "superlink.log")
    assert time.monotonic() - started < 5
    assert supervisor.procs == {}, "nothing was started"


def test_a_child_that_logs_address_in_use_fails_the_wait_at_once(tmp_path):
    log = tmp_path / "child.log"
    log.write_text("an old run: Address already in use\n")  # history, not this run
    since = log.stat().st_size
    script = ("import sys, time; print('E0000 Failed to bind: Address already in use', "
              "flush=True); time.sleep(30)")
    with open(log, "ab") as out:
        child = subprocess.Popen([sys.executable, "-c", script], stdout=out)
    try:
        started = time.monotonic()
        with pytest.raises(ProcessError, match="Address already in use"):
            wait_for_port("127.0.0.1", 9, timeout=20, proc=child, log=log, log_from=since)
        assert time.monotonic() - started < 10
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize(("extra", "message"), [
    ({"registry_port": 9093}, "9093 is also superlink.port"),
    ({"metrics_port": 9095, "registry_port": 9095}, "is also registry_port"),
    ({"superlink": {"port": 70000}}, "not a TCP port"),
])
def test_a_federation_whose_services_cannot_all_listen_is_refused_at_load(tmp_path, extra,
                                                                          message):
    import yaml

    from fedehr.server.config import load_federation_config
    from fedehr.shared.errors import FedEHRError

    body = {"name": "fed", "workdir": "w", "sites": ["a", "b"], **extra}
    body["superlink"] = {"insecure": True, **body.get("superlink", {})}
    config = tmp_path / "federation.yaml"
    config.write_text(yaml.safe_dump(body))
    with pytest.raises(FedEHRError, match=message):
        load_federation_config(config)
