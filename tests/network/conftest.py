"""The test network fixture: the consortium and hospitals as network namespaces (root only).

Each test gets a fresh network (building one takes a fraction of a second) and
it is torn down after the test, passed or failed: programs started in the
namespaces are stopped, the namespaces and their links deleted.
"""

from __future__ import annotations

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


@pytest.fixture
def network():
    """A TestNetwork of `consortium`, `hospital_a` and `hospital_b`; namespace names carry
    this process's id, so parallel pytest-xdist workers build separate networks."""
    if reason := _why_no_network():
        pytest.skip(reason)
    try:
        net = build_network(str(os.getpid()), HOSPITALS)
    except NetworkError as exc:
        pytest.skip(f"cannot build network namespaces here ({exc})")
    try:
        yield net
    finally:
        net.teardown()
