"""The site worker speaks Flower 1.42's Runtime API (Flower internals: keep this test).

A real `flower-supernode --isolation process` (no SuperLink behind it: the
Runtime API comes up anyway) with a shared SuperExec secret: the worker
claims with the secret and gets an empty claim; any other local process,
without the secret or with a wrong one, is refused (HTTP 401). The full
protocol (pull, reply, task output, heartbeats) runs in
tests/e2e/test_site_approval.py and tests/e2e/test_site_worker.py.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import httpx
import pytest

from fedehr.client.config import SiteConfig
from fedehr.client.worker import SiteWorker
from fedehr.shared.processes import Supervisor, flower_env, free_port, wait_for_port


@pytest.fixture(scope="module")
def supernode(tmp_path_factory):
    root = tmp_path_factory.mktemp("supernode")
    secret = root / "worker.secret"
    secret.write_bytes(secrets.token_bytes(32))
    port, supervisor = free_port(), Supervisor()
    args = [str(Path(sys.executable).parent / "flower-supernode"), "--insecure",
            "--superlink", f"127.0.0.1:{free_port()}", "--port", str(port),
            "--isolation", "process", "--superexec-auth-secret-file", str(secret)]
    proc = supervisor.start("supernode", args, log=root / "supernode.log",
                            env=flower_env(root / "flwr-home"))
    try:
        wait_for_port("127.0.0.1", port, timeout=60, proc=proc, log=root / "supernode.log")
        yield {"address": f"127.0.0.1:{port}", "secret": secret.read_bytes(), "root": root}
    finally:
        supervisor.stop_all()


def _worker(supernode, secret: bytes | None) -> SiteWorker:
    site = SiteConfig(name="hospital_a", data=supernode["root"],
                      state_dir=supernode["root"] / "state", insecure=True)
    return SiteWorker(site, supernode["address"], secret)


def test_the_worker_claims_tasks_with_the_shared_secret(supernode):
    assert _worker(supernode, supernode["secret"]).acquire() is None  # no run, no task


@pytest.mark.parametrize("secret", [None, b"a guess"])
def test_other_local_processes_cannot_claim_the_sites_tasks(supernode, secret):
    with pytest.raises(httpx.HTTPStatusError) as info:
        _worker(supernode, secret).acquire()
    assert info.value.response.status_code == 401


def test_flower_is_the_version_this_worker_was_written_against():
    import flwr

    assert flwr.__version__.startswith("1.42."), "re-check client/worker.py against " \
        "flwr/supernode/runtime/run_clientapp.py before moving the pin"
