"""A test network of hosts on one machine: one Linux network namespace per host.

The consortium and each hospital get their own namespace (their own interfaces,
loopback, routes and ports), joined by point-to-point veth links, so that
processes started in them see each other only through addresses on those
links, as on separate machines. The consortium's service address lives on its
loopback; every hospital routes to it through its own link and to nothing
else. The consortium does not forward (a new namespace starts with
ip_forward 0), so no hospital can reach another.

    consortium  lo 10.77.0.1/32
      |-- to_hospital_a 10.77.1.1/24 ==== uplink 10.77.1.2/24  hospital_a
      '-- to_hospital_b 10.77.2.1/24 ==== uplink 10.77.2.2/24  hospital_b

Links are created inside their namespaces, so the same interface names and
addresses serve every concurrent test session; only the namespace names carry
the session's process id. Needs root and iproute2 (`ip`, `tc`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

CONSORTIUM = "consortium"
CONSORTIUM_ADDRESS = "10.77.0.1"
UPLINK = "uplink"  # each hospital's interface towards the consortium


class NetworkError(RuntimeError):
    """An `ip` command failed while building or changing the test network."""


def ip(*args: str) -> str:
    """Run `ip ARGS` and return its stdout; NetworkError with ip's own message on failure."""
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


def run_in(ns: str, argv: list[str], *, timeout: float = 120, env: dict | None = None,
           check: bool = False) -> subprocess.CompletedProcess:
    """Run a program inside namespace `ns` to completion, capturing its text output."""
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                          timeout=timeout, env=env, check=check)


def popen_in(ns: str, argv: list[str], *, log: Path, env: dict | None = None
             ) -> subprocess.Popen:
    """Start a program inside namespace `ns` in its own process group, output to `log`.

    `ip netns exec` execs the program in place, so the Popen's pid is the program's.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)


def pids_in(ns: str) -> list[int]:
    """Every process whose network namespace is `ns` (compared by inode, from /proc)."""
    try:
        wanted = os.stat(f"/run/netns/{ns}").st_ino
    except FileNotFoundError:
        return []
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if os.stat(entry / "ns" / "net").st_ino == wanted:
                found.append(int(entry.name))
    return found


@dataclass
class Host:
    name: str  # consortium, hospital_a, ...
    ns: str  # the namespace's name, unique to this session
    address: str  # where the others reach it
    link: str  # its interface towards the other side of its link


@dataclass
class TestNetwork:
    """The consortium and hospitals as namespaces; `teardown` removes all of it."""

    hosts: dict[str, Host]
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def consortium(self) -> Host:
        return self.hosts[CONSORTIUM]

    def ns(self, host: str) -> str:
        return self.hosts[host].ns

    def run(self, host: str, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        return run_in(self.ns(host), argv, **kwargs)

    def start(self, host: str, argv: list[str], *, log: Path, env: dict | None = None
              ) -> subprocess.Popen:
        """A long-running program on `host`; stopped by `teardown` if still running."""
        proc = popen_in(self.ns(host), argv, log=log, env=env)
        self.procs.append(proc)
        return proc

    def set_link(self, host: str, up: bool) -> None:
        """Cut (or restore) a hospital's link from its own side, as a pulled cable would.

        Down drops the route through the link; up puts it back, as the host's network
        manager would when the cable returns.
        """
        ns = self.ns(host)
        ip("-n", ns, "link", "set", UPLINK, "up" if up else "down")
        if up:
            ip("-n", ns, "route", "replace", f"{CONSORTIUM_ADDRESS}/32", "via", self.gateway(host))

    def set_consortium_links(self, up: bool) -> None:
        """Cut (or restore) every link at the consortium's end, as the consortium's own
        uplink failing would: no hospital reaches it, the SuperLink keeps running."""
        for name in self.hosts:
            if name != CONSORTIUM:
                ip("-n", self.consortium.ns, "link", "set", f"to_{name}"[:15],
                   "up" if up else "down")

    def kill_host(self, host: str) -> list[int]:
        """SIGKILL every process on `host`, as a power cut would (its disk, here the
        shared one, keeps what was written). Returns the pids killed."""
        pids = pids_in(self.ns(host))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in pids) and \
                time.monotonic() < deadline:
            for proc in self.procs:
                proc.poll()  # reap ours, or their zombies linger in /proc
            time.sleep(0.1)
        return pids

    def gateway(self, host: str) -> str:
        """The consortium's end of `host`'s link (10.77.N.1 for 10.77.N.2)."""
        return self.hosts[host].address.rsplit(".", 1)[0] + ".1"

    def limit(self, host: str, mbit: float) -> None:
        """Token-bucket limit (`tc ... tbf`) on what `host` sends and what it receives, at
        both ends of its link. The bucket holds 10 ms of traffic (at least 32 KiB, more
        than a timer tick at 100 Mbit/s); packets wait up to 400 ms, then drop."""
        burst = max(32 * 1024, int(mbit * 1e6 / 8 / 100))
        for ns, dev in ((self.ns(host), UPLINK), (self.consortium.ns, f"to_{host}")):
            subprocess.run(["tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf",
                            "rate", f"{mbit:g}mbit", "burst", str(burst), "latency", "400ms"],
                           check=True, capture_output=True, timeout=30)

    def unlimit(self, host: str) -> None:
        for ns, dev in ((self.ns(host), UPLINK), (self.consortium.ns, f"to_{host}")):
            subprocess.run(["tc", "-n", ns, "qdisc", "del", "dev", dev, "root"],
                           capture_output=True, timeout=30)

    def link_bytes(self, host: str) -> dict[str, int]:
        """The kernel's byte counters of `host`'s uplink: {'rx': ..., 'tx': ...}."""
        link = json.loads(ip("-n", self.ns(host), "-s", "-j", "link", "show", UPLINK))[0]
        stats = link["stats64"]
        return {"rx": int(stats["rx"]["bytes"]), "tx": int(stats["tx"]["bytes"])}

    def teardown(self) -> None:
        """Stop every program started in the namespaces (ours first, politely), then
        delete the namespaces, which removes their links."""
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5  # then the sweep below kills what is left
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for host in self.hosts.values():
            for pid in pids_in(host.ns):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
        for host in self.hosts.values():
            with contextlib.suppress(NetworkError):
                ip("netns", "del", host.ns)


def build_network(tag: str, hospitals: list[str]) -> TestNetwork:
    """The consortium and one namespace per hospital; see the module docstring.

    `tag` makes the namespace names unique (a pid, an xdist worker id). A failure
    half-way removes what was built and raises NetworkError.
    """
    consortium = Host(CONSORTIUM, f"fedehr-{tag}-{CONSORTIUM}", CONSORTIUM_ADDRESS, "lo")
    net = TestNetwork({CONSORTIUM: consortium})
    try:
        ip("netns", "add", consortium.ns)
        ip("-n", consortium.ns, "link", "set", "lo", "up")
        ip("-n", consortium.ns, "addr", "add", f"{CONSORTIUM_ADDRESS}/32", "dev", "lo")
        for i, name in enumerate(hospitals, start=1):
            net.hosts[name] = _add_hospital(consortium, name, tag, subnet=i)
    except (NetworkError, subprocess.SubprocessError):
        net.teardown()
        raise
    return net


def _add_hospital(consortium: Host, name: str, tag: str, *, subnet: int) -> Host:
    host = Host(name, f"fedehr-{tag}-{name}", f"10.77.{subnet}.2", UPLINK)
    ip("netns", "add", host.ns)
    ip("-n", host.ns, "link", "set", "lo", "up")
    towards = f"to_{name}"[:15]
    ip("link", "add", UPLINK, "netns", host.ns, "type", "veth", "peer", "name", towards,
       "netns", consortium.ns)
    ip("-n", consortium.ns, "addr", "add", f"10.77.{subnet}.1/24", "dev", towards)
    ip("-n", host.ns, "addr", "add", f"{host.address}/24", "dev", UPLINK)
    ip("-n", consortium.ns, "link", "set", towards, "up")
    ip("-n", host.ns, "link", "set", UPLINK, "up")
    ip("-n", host.ns, "route", "add", f"{CONSORTIUM_ADDRESS}/32", "via", f"10.77.{subnet}.1")
    return host
