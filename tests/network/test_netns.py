"""The test network itself: hospitals reach the consortium's address and nothing else."""

from __future__ import annotations

import sys
import time

from .netns import CONSORTIUM_ADDRESS, pids_in

LISTEN = ("import socket, sys, time; s = socket.socket(); "
          "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
          "s.bind((sys.argv[1], 7777)); s.listen(); time.sleep(60)")
DIAL = ("import socket, sys\n"
        "try:\n    socket.create_connection((sys.argv[1], 7777), timeout=3).close(); print('ok')\n"
        "except OSError as exc:\n    print(exc.strerror or type(exc).__name__)")


def _dial(network, host: str, address: str) -> str:
    return network.run(host, [sys.executable, "-c", DIAL, address], timeout=30).stdout.strip()


def _listen(network, host: str, address: str, tmp_path) -> None:
    network.start(host, [sys.executable, "-c", LISTEN, address], log=tmp_path / f"{host}.log")
    time.sleep(0.5)  # python's start; the dial below fails loudly if it was not enough


def test_hospitals_reach_the_consortium_address(network, tmp_path):
    _listen(network, "consortium", CONSORTIUM_ADDRESS, tmp_path)
    assert _dial(network, "hospital_a", CONSORTIUM_ADDRESS) == "ok"
    assert _dial(network, "hospital_b", CONSORTIUM_ADDRESS) == "ok"


def test_no_route_between_hospitals(network, tmp_path):
    b = network.hosts["hospital_b"].address
    _listen(network, "hospital_b", b, tmp_path)
    assert _dial(network, "hospital_b", b) == "ok"  # b itself listens
    assert _dial(network, "hospital_a", b) == "Network is unreachable"


def test_loopback_is_each_hosts_own(network, tmp_path):
    _listen(network, "consortium", "127.0.0.1", tmp_path)
    assert _dial(network, "hospital_a", "127.0.0.1") == "Connection refused"


def test_a_cut_link_makes_the_consortium_unreachable(network, tmp_path):
    _listen(network, "consortium", CONSORTIUM_ADDRESS, tmp_path)
    network.set_link("hospital_a", up=False)
    assert _dial(network, "hospital_a", CONSORTIUM_ADDRESS) == "Network is unreachable"
    network.set_link("hospital_a", up=True)
    assert _dial(network, "hospital_a", CONSORTIUM_ADDRESS) == "ok"


def test_teardown_stops_programs_and_removes_namespaces(network, tmp_path):
    _listen(network, "consortium", CONSORTIUM_ADDRESS, tmp_path)
    ns = network.consortium.ns
    assert pids_in(ns)
    network.teardown()
    assert pids_in(ns) == []
    assert network.run("consortium", ["true"]).returncode != 0  # the namespace is gone


def test_a_limited_link_carries_at_most_its_rate(network, tmp_path):
    sink = ("import socket, time; s = socket.create_server(('10.77.0.1', 7777)); "
            "c, _ = s.accept(); n = len(c.recv(65536)); t = time.monotonic()\n"
            "while chunk := c.recv(65536): n += len(chunk)\n"
            "print(n, time.monotonic() - t)")
    log = tmp_path / "sink.log"
    receiver = network.start("consortium", [sys.executable, "-c", sink], log=log)
    time.sleep(0.5)
    network.limit("hospital_a", 1)  # 1 Mbit/s: 125 kB/s
    send = "import socket; socket.create_connection(('10.77.0.1', 7777)).sendall(bytes(250_000))"
    network.run("hospital_a", [sys.executable, "-c", send])
    receiver.wait(timeout=30)
    received, seconds = log.read_text().split()
    assert int(received) == 250_000
    assert 1.5 < float(seconds) < 4  # 250 kB at 125 kB/s: 2 s (unlimited: milliseconds)
