"""A federation across the test network: the server and each site as programs on their hosts.

The configs and the PKI are written as `LocalFederation.create` writes them for
loopback; then the consortium's address replaces loopback everywhere: the
SuperLink binds 10.77.0.1 inside the consortium's namespace, each site.yaml
dials it, and the SuperLink certificate is issued for it with
`fedehr pki server --host`. Every program runs inside its host's namespace,
started with the same commands hospital IT and the operator type
(`fedehr server start`, `fedehr site start`, `fedehr run start`). The hosts
share this machine's disk, so tests read status files and logs directly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from fedehr.server.local_federation import HospitalSpec, LocalFederation
from fedehr.shared.atomic import write_text

from .netns import CONSORTIUM, CONSORTIUM_ADDRESS, TestNetwork

FEDEHR = [sys.executable, "-m", "fedehr.shared.cli"]
DIAL = ("import socket, sys\n"
        "try:\n    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()\n"
        "except OSError:\n    sys.exit(1)")


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"({path} not written)"


def fedehr(net: TestNetwork, host: str, *args: str, timeout: float = 120
           ) -> subprocess.CompletedProcess:
    """`fedehr ARGS` on `host`, to completion."""
    return net.run(host, [*FEDEHR, *args], timeout=timeout)


@dataclass
class NetworkFederation:
    net: TestNetwork
    local: LocalFederation  # the configs and PKI it wrote; its processes are not used

    @classmethod
    def create(cls, net: TestNetwork, root: Path, hospitals: list[HospitalSpec], *,
               anchor: Path, federation: dict | None = None, site: dict | None = None,
               server_hosts: tuple[str, ...] = (CONSORTIUM_ADDRESS,)) -> NetworkFederation:
        """Configs for `hospitals` dialing the consortium; the SuperLink certificate names
        `server_hosts` (another address there rehearses a wrong certificate)."""
        local = LocalFederation.create(root, hospitals, anchor=anchor, federation=federation,
                                       site={"training": {"threads": 1}, **(site or {})})
        fed = cls(net, local)
        fed._point_at_consortium()
        fed.issue_server_cert(*server_hosts)
        return fed

    def _point_at_consortium(self) -> None:
        cfg = yaml.safe_load(self.local.fed_yaml.read_text())
        cfg["superlink"]["host"] = CONSORTIUM_ADDRESS
        write_text(self.local.fed_yaml, yaml.safe_dump(cfg, sort_keys=False))
        for path in self.local.site_yamls.values():
            site = yaml.safe_load(path.read_text())
            site["superlink"] = self.superlink
            write_text(path, yaml.safe_dump(site, sort_keys=False))

    @property
    def root(self) -> Path:
        return self.local.root

    @property
    def port(self) -> int:
        return int(yaml.safe_load(self.local.fed_yaml.read_text())["superlink"]["port"])

    @property
    def superlink(self) -> str:
        return f"{CONSORTIUM_ADDRESS}:{self.port}"

    def issue_server_cert(self, *hosts: str, days: int | None = None) -> None:
        """`fedehr pki server --host ... --force`, as the operator would (on any host)."""
        args = ["pki", "server", "--dir", str(self.root / "pki"), "--force"]
        for host in hosts:
            args += ["--host", host]
        if days is not None:
            args += ["--days", str(days)]
        done = subprocess.run([*FEDEHR, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr

    def site_yaml(self, name: str) -> Path:
        return self.local.site_yamls[name]

    def site_log(self, name: str) -> Path:
        return self.root / "site-state" / f"{name}.daemon.log"

    def set_site(self, name: str, **fields) -> None:
        """Change fields of a site.yaml (a wrong port, ...)."""
        path = self.site_yaml(name)
        site = yaml.safe_load(path.read_text())
        site.update(fields)
        write_text(path, yaml.safe_dump(site, sort_keys=False))

    # -- programs on their hosts -------------------------------------------------------

    def start_superlink(self) -> None:
        """The SuperLink alone (no registrations), bound to the consortium's address."""
        from fedehr.server.superlink import superlink_args
        from fedehr.shared.pki import PKIPaths
        from fedehr.shared.processes import flower_env

        cfg = self.local.config
        args = superlink_args(CONSORTIUM_ADDRESS, self.port, PKIPaths.of(cfg.pki),
                              cfg.workdir / "state" / "superlink.db")
        (cfg.workdir / "state").mkdir(parents=True, exist_ok=True)
        log = cfg.workdir / "logs" / "superlink.log"
        proc = self.net.start(CONSORTIUM, args, log=log, env=flower_env(cfg.flwr_home))
        self.wait_listening(proc, log)

    def start_server(self) -> None:
        """`fedehr server start` on the consortium: SuperLink plus the sites' registrations."""
        log = self.root / "server.log"
        before = len(_read(log))  # a restart appends to the first start's log
        proc = self.net.start(CONSORTIUM, [*FEDEHR, "server", "start", "--config",
                                           str(self.local.fed_yaml)], log=log, env=_env())
        wait_until(lambda: "Next: start the sites" in _read(log)[before:], 300, proc, log,
                   "the server to start and register the sites")

    def wait_listening(self, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
        def answers() -> bool:
            return self.net.run(CONSORTIUM, [sys.executable, "-c", DIAL, CONSORTIUM_ADDRESS,
                                             str(self.port)]).returncode == 0

        wait_until(answers, timeout, proc, log, f"the SuperLink to listen on {self.superlink}")

    def start_site(self, name: str, isolation: str = "worker") -> subprocess.Popen:
        """`fedehr site start` on the hospital's own host; returns at once."""
        return self.net.start(name, [*FEDEHR, "site", "start", "--config",
                                     str(self.site_yaml(name)), "--isolation", isolation],
                              log=self.site_log(name), env=_env())

    def start_sites(self, *names: str) -> dict[str, subprocess.Popen]:
        """`fedehr site start` on each hospital's host, returned once each is connected."""
        sites = {name: self.start_site(name) for name in names}
        for name, proc in sites.items():
            self.wait_connected(name, proc)
        return sites

    def site_status(self, name: str) -> str:
        done = fedehr(self.net, name, "site", "status", "--config", str(self.site_yaml(name)))
        return done.stdout + done.stderr

    def superlink_check(self, name: str) -> str:
        """The `superlink` line of `fedehr site check`, computed on the hospital's host
        (the check alone: the CLI's other checks cost seconds of CPU each)."""
        probe = ("import sys; from fedehr.client.config import load_site_config; "
                 "from fedehr.client.preflight import superlink_check; "
                 "print(superlink_check(load_site_config(sys.argv[1])).line())")
        done = self.net.run(name, [sys.executable, "-c", probe, str(self.site_yaml(name))])
        return " ".join((done.stdout + done.stderr).split())

    def site_check(self, name: str) -> tuple[int, str]:
        done = fedehr(self.net, name, "site", "check", "--config", str(self.site_yaml(name)))
        return done.returncode, " ".join((done.stdout + done.stderr).split())

    def wait_connected(self, name: str, proc: subprocess.Popen, timeout: float = 300) -> None:
        """Until `fedehr site status` on the hospital's host says its SuperNode is connected
        (asked once the daemon has started it: each status costs a second of CPU)."""
        log = self.site_log(name)
        wait_until(lambda: "SuperNode started" in _read(log), timeout, proc, log,
                   f"{name}'s daemon to start its SuperNode")
        wanted = f"its SuperNode is connected to {self.superlink}"
        said = [""]

        def connected() -> bool:
            said[0] = " ".join(self.site_status(name).split())
            return wanted in said[0]

        try:
            wait_until(connected, timeout, proc, log, f"{name} to connect to {self.superlink}")
        except AssertionError as exc:  # what status said last is the clue
            raise AssertionError(f"{exc}\nlast `fedehr site status`: {said[0]}") from None

    def launch(self, *, resume: bool = False) -> subprocess.Popen:
        """`fedehr run start [--resume]` on the consortium (it follows the run to its end)."""
        return self.net.start(CONSORTIUM, [*FEDEHR, "run", "start", "--config",
                                           str(self.local.fed_yaml),
                                           *(["--resume"] if resume else [])],
                              log=self.root / "run.log", env=_env())


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def wait_until(predicate, timeout: float, proc: subprocess.Popen | None, log: Path,
               what: str) -> None:
    """Poll `predicate` until true; fail with the log's tail if `proc` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"exited ({proc.returncode}) before {what}:\n{tail(log)}")
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}:\n{tail(log)}")
