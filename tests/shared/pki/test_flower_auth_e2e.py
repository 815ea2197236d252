"""End to end: the issued PKI secures a real Flower 1.42 SuperLink and admits only registered sites.

Starts `flower-superlink` with TLS (ca.pem, superlink.pem/.key) and SuperNode
authentication, registers one site's .pub with `flwr supernode register`,
then shows that the registered site's `flower-supernode` comes online and an
unregistered site's key is refused. docs/pki.md lists the same commands.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedehr.shared.pki import PKIPaths, init_ca, issue_server_cert, issue_site_key

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    """Direct children (Flower starts flower-superexec in its own session)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _stop(proc: subprocess.Popen) -> None:
    """Stop `proc`, its process group and the sessions of its direct children."""
    groups = [proc.pid, *_children(proc.pid)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pgid in groups:
            try:
                os.killpg(pgid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            proc.wait(timeout=10)
            break
        except subprocess.TimeoutExpired:
            continue


def _wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"SuperLink exited ({proc.returncode}):\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"SuperLink did not listen on {port}:\n{log.read_text()}")


def _flwr(env: dict, *args: str) -> str:
    out = subprocess.run([str(BIN / "flwr"), *args], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def _nodes(env: dict) -> dict[str, str]:
    text = _flwr(env, "supernode", "ls", "consortium", "--format", "json")
    return {n["node-id"]: n["status"] for n in json.loads(text[text.index("{"):])["nodes"]}


def test_registered_site_joins_over_tls_and_unregistered_site_is_refused(tmp_path):
    pki = PKIPaths.of(tmp_path / "pki")
    init_ca(pki.root)
    cert, key = issue_server_cert(pki.root, ["localhost"])
    issue_site_key(pki.root, "st-marys")
    issue_site_key(pki.root, "rogue")  # issued but never registered

    home = tmp_path / "flwr-home"
    home.mkdir()
    port = _free_port()
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "consortium"\n\n'
        f'[superlink.consortium]\naddress = "127.0.0.1:{port}"\n'
        f'root-certificates = "{pki.ca_cert}"\n')
    env = {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0",
           "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # finds flower-superexec

    def start(name: str, *args: str) -> tuple[subprocess.Popen, Path]:
        log = tmp_path / f"{name}.log"
        proc = subprocess.Popen([str(BIN / args[0]), *args[1:]], env=env, cwd=tmp_path,
                                stdout=log.open("w"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        procs.append(proc)
        return proc, log

    procs: list[subprocess.Popen] = []
    try:
        link, link_log = start(
            "superlink", "flower-superlink",
            "--ssl-ca-certfile", str(pki.ca_cert), "--ssl-certfile", str(cert),
            "--ssl-keyfile", str(key), "--enable-supernode-auth",
            "--host", "127.0.0.1", "--port", str(port),
            "--disable-runtime-dependency-installation")
        _wait_port(port, link, link_log)

        registered = json.loads(_flwr(env, "supernode", "register", str(pki.site_pub("st-marys")),
                                      "consortium", "--format", "json"))
        node_id = str(registered["node-id"])

        start("supernode-st-marys", "flower-supernode",
              "--superlink", f"127.0.0.1:{port}", "--root-certificates", str(pki.ca_cert),
              "--auth-supernode-private-key", str(pki.site_key("st-marys")),
              "--port", str(_free_port()))
        deadline = time.monotonic() + 60
        while _nodes(env).get(node_id) != "online":
            assert time.monotonic() < deadline, (tmp_path / "supernode-st-marys.log").read_text()
            time.sleep(1)

        rogue, rogue_log = start(
            "supernode-rogue", "flower-supernode",
            "--superlink", f"127.0.0.1:{port}", "--root-certificates", str(pki.ca_cert),
            "--auth-supernode-private-key", str(pki.site_key("rogue")),
            "--port", str(_free_port()), "--max-retries", "2", "--max-wait-time", "20")
        assert rogue.wait(timeout=60) != 0, rogue_log.read_text()
        assert "Failed to activate SuperNode" in rogue_log.read_text()
        assert list(_nodes(env)) == [node_id]
    finally:
        for proc in reversed(procs):
            _stop(proc)
