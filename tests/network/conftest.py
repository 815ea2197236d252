"""The test network fixture: the consortium and hospitals as network namespaces (root only).

Each test gets a fresh network (building one takes a fraction of a second) and
it is torn down after the test, passed or failed: programs started in the
namespaces are stopped, the namespaces and their links deleted.
"""

from __future__ import annotations

import contextlib
import os
import shutil

import pytest

from .netns import NetworkError, build_network

HOSPITALS = ["hospital_a", "hospital_b"]


def _why_no_network() -> str | None:
    if os.geteuid() != 0:
        return "the network tests build network namespaces, which needs root"
    if shutil.which("ip") is None:
        return "the network tests need iproute2 (`ip`): apt-get install iproute2"
    return None


@contextlib.contextmanager
def _test_network(tag: str):
    if reason := _why_no_network():
        pytest.skip(reason)
    try:
        net = build_network(tag, HOSPITALS)
    except NetworkError as exc:
        pytest.skip(f"cannot build network namespaces here ({exc})")
    try:
        yield net
    finally:
        net.teardown()


@pytest.fixture
def network():
    """A TestNetwork of `consortium`, `hospital_a` and `hospital_b`; namespace names carry
    this process's id, so parallel pytest-xdist workers build separate networks."""
    with _test_network(str(os.getpid())) as net:
        yield net


@pytest.fixture(scope="module")
def module_network():
    """The same, shared by the tests of one module (they must leave it as they found it)."""
    with _test_network(f"{os.getpid()}m") as net:
        yield net


@pytest.fixture(scope="session")
def anchor():
    from fedehr.shared.data.anchor import fetch_anchor

    return fetch_anchor()


@pytest.fixture(scope="session")
def hospitals(tmp_path_factory):
    """Two small synthetic hospitals (MEDS), written once per session."""
    from pathlib import Path

    from fedehr.server.local_federation import HospitalSpec
    from fedehr.shared.data.synth import synthesize

    out = tmp_path_factory.mktemp("hospitals")
    return [HospitalSpec(s.name, Path(s.path), s.harmonisation)
            for s in synthesize(out / "h", sites=len(HOSPITALS), patients=120, seed=7)]
