"""`fedehr server check`: the operator's pre-flight check (issue 17): federation.yaml,
the PKI, ports free before the start, SuperLink and registry answering once it runs.
Exit 0 green, 1 red, 2 amber only."""

from __future__ import annotations

import json
import os
import shutil
import socket

import pytest
import yaml
from typer.testing import CliRunner

from fedehr.server.preflight import server_checks
from fedehr.shared.cli import build_app
from fedehr.shared.pki import init_ca, issue_server_cert, issue_site_key
from fedehr.shared.pki.bundle_signing import create_bundle_key
from fedehr.shared.processes import free_port
from tests.server.tls_endpoint import tls_endpoint

SITES = ["hospital_a", "hospital_b"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    root = tmp_path_factory.mktemp("pki")
    init_ca(root, "Test Consortium CA")
    issue_server_cert(root, ["localhost"])
    for name in SITES:
        issue_site_key(root, name)
    create_bundle_key(root)
    return root


@pytest.fixture
def federation(tmp_path, pki):
    """federation.yaml of a consortium ready to start; tests break one thing each."""
    local = tmp_path / "pki"
    shutil.copytree(pki, local)
    raw = {"name": "demo", "workdir": "federation", "pki": "pki", "sites": SITES,
           "superlink": {"host": "127.0.0.1", "port": free_port()},
           "registry_port": free_port()}

    def write(**changes):
        config = tmp_path / "federation.yaml"
        config.write_text(yaml.safe_dump({**raw, **changes}))
        return config

    write.raw, write.pki = raw, local
    return write


def _line(checks, name):
    return next(c for c in checks if c.name == name)


def test_a_consortium_ready_to_start_is_all_green_and_exits_zero(federation):
    result = CliRunner().invoke(build_app(), ["server", "check", "--config", str(federation())],
                                env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert all(line.startswith("green") for line in result.output.splitlines())
    assert "superlink port: 127.0.0.1:" in result.output and "registry port" in result.output


def test_a_broken_config_is_red(federation):
    checks = server_checks(federation(min_sites=5))
    assert [(c.name, c.level) for c in checks] == [("config", "red")]


def test_a_listed_site_without_a_key_is_red(federation):
    keys = _line(server_checks(federation(sites=[*SITES, "hospital_c"])), "site keys")
    assert keys.level == "red" and "hospital_c" in keys.message
    assert "fedehr pki site NAME" in keys.fix


def test_no_bundle_key_is_amber(federation):
    (federation.pki / "signing" / "bundle.pub").unlink()
    checks = server_checks(federation())
    assert _line(checks, "bundle key").level == "amber" and \
        [c.level for c in checks].count("amber") == 1


def test_a_superlink_certificate_from_another_ca_is_red(federation, tmp_path):
    other = tmp_path / "other"
    init_ca(other, "Other CA")
    issue_server_cert(other, ["localhost"])
    shutil.copy(other / "superlink.pem", federation.pki / "superlink.pem")
    cert = _line(server_checks(federation()), "superlink certificate")
    assert cert.level == "red" and "was not signed by" in cert.message


def test_a_superlink_certificate_that_does_not_name_the_host_is_red(federation):
    cert = _line(server_checks(federation(superlink={"host": "10.9.8.7", "port": 9093})),
                 "superlink certificate")
    assert cert.level == "red" and "does not name 10.9.8.7" in cert.message
    assert "fedehr pki server --host 10.9.8.7" in cert.fix


def test_a_port_in_use_before_start_is_red(federation):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        checks = server_checks(federation(registry_port=port))
    assert _line(checks, "registry port").level == "red"


def test_no_registry_at_all_is_amber(federation):
    registry = _line(server_checks(federation(registry_port=None)), "registry")
    assert registry.level == "amber" and "registry_port" in registry.fix


def test_a_running_server_is_checked_over_tls_and_a_silent_registry_is_red(federation,
                                                                            tmp_path):
    with tls_endpoint(federation.pki) as port:
        config = federation(superlink={"host": "127.0.0.1", "port": port})
        workdir = tmp_path / "federation"
        workdir.mkdir()
        # the running daemon's PID file, as `fedehr server start` writes it (this process)
        (workdir / "server.pid").write_text(json.dumps({"daemon": os.getpid()}))
        checks = server_checks(config)
    superlink, registry = _line(checks, "superlink"), _line(checks, "registry")
    assert superlink.level == "green" and "CA matches" in superlink.message
    assert registry.level == "red" and "not reachable" in registry.message
