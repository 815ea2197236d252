"""The processes fedehr starts (SuperLink, SuperNodes, site workers) and how they stop.

Every child is started in its own process group, logs to a file, and is
recorded in a PID file, so that Ctrl-C, normal exit, a later `stop` command
or a test's teardown can stop all of it; no stray SuperLink is left behind.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from fedehr.shared.atomic import write_text
from fedehr.shared.errors import FedEHRError


class ProcessError(FedEHRError):
    """A process fedehr started failed to come up or died."""


def flower_env(flwr_home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for every Flower process: a project-owned FLWR_HOME, no telemetry,
    no runtime `uv sync`, and this interpreter's bin folder first on PATH (Flower
    spawns helpers such as `flower-superexec` by name)."""
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env.update(
        FLWR_HOME=str(flwr_home),
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        PATH=bindir + os.pathsep + env.get("PATH", ""),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra or {})
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None,
                  log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ProcessError(f"exited with code {proc.returncode} before listening on "
                               f"{host}:{port}", where=" ".join(proc.args[:1]),
                               fix=f"read its log{f' {log}' if log else ''}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.2)
    raise ProcessError(f"nothing listening on {host}:{port} after {timeout:.0f} s",
                       fix=f"read the log{f' {log}' if log else ''}")


DAEMON = "daemon"  # the PID file's entry for the supervising process itself


@dataclass
class Supervisor:
    """Owns a set of child processes; `stop_all` ends them (SIGTERM, then SIGKILL)."""

    pidfile: Path | None = None
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        atexit.register(self.stop_all)

    def start(self, name: str, args: list[str], *, log: Path, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as fh:
            proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs[name] = proc
        self.logs[name] = log
        self._write_pidfile()
        return proc

    def alive(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    def stop(self, name: str, timeout: float = 10.0) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None:
            terminate_group(proc.pid, timeout)
            with contextlib.suppress(Exception):
                proc.wait(timeout=1)
        self._write_pidfile()

    def kill(self, name: str) -> None:
        """Hard kill (SIGKILL), as a crash would: for fault-tolerance tests."""
        proc = self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        self._write_pidfile()

    def record(self) -> None:
        """Write the PID file now (a daemon with no children yet, such as the registry,
        so that its `stop` command finds it)."""
        self._write_pidfile()

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name)
        if self.pidfile is not None:
            with contextlib.suppress(FileNotFoundError):
                self.pidfile.unlink()

    def _write_pidfile(self) -> None:
        if self.pidfile is not None:
            # The daemon itself first: `stop` asks it to shut down in order, and only
            # then ends children it left behind (a daemon killed with -9, say).
            pids = {DAEMON: os.getpid()}
            pids.update({n: p.pid for n, p in self.procs.items() if p.poll() is None})
            write_text(self.pidfile, json.dumps(pids, indent=2))


def terminate_group(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM a process group, wait, then SIGKILL what is left."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def stop_from_pidfile(pidfile: Path) -> list[str]:
    """Stop every process recorded in a PID file (used by `stop` commands)."""
    if not pidfile.exists():
        return []
    pids = json.loads(pidfile.read_text())
    daemon = pids.pop(DAEMON, None)
    if daemon is not None and daemon != os.getpid():
        _terminate_daemon(int(daemon))
    for pid in pids.values():
        terminate_group(int(pid))
    pidfile.unlink(missing_ok=True)
    return [name for name in ([DAEMON] if daemon else []) + list(pids)]


def _terminate_daemon(pid: int, timeout: float = 30.0) -> None:
    """SIGTERM a foreground daemon (not its group: it may share one with a shell) and
    wait while it stops its own children."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _running(pid):
        time.sleep(0.2)


def _running(pid: int) -> bool:
    """True while `pid` runs; an exited process its parent has not reaped yet does not."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so a foreground command's `finally` stops its children
    (systemd, `stop` commands and test teardown send SIGTERM)."""

    def _handler(signum, frame):
        raise SystemExit(0)  # asked to stop: an orderly shutdown, not a failure

    signal.signal(signal.SIGTERM, _handler)


def wait_for_stop_signal(poll: float = 0.5) -> None:
    """Block until Ctrl-C (SIGINT) or SIGTERM, then return normally.

    Waits in short slices: an Event wait with no timeout parks the main thread in
    a lock where a signal taken by another thread (gRPC's) never wakes it, so
    Ctrl-C appeared to be ignored.
    """
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(poll):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass
class DaemonState:
    """What a daemon's PID file says about it now (for `status` commands)."""

    running: bool
    pid: int | None = None
    since: float | None = None  # Unix time the daemon process started
    children: dict[str, int] = field(default_factory=dict)  # name -> pid, running ones only


def daemon_state(pidfile: Path) -> DaemonState:
    """Whether the daemon recorded in `pidfile` runs, since when, and its live children."""
    try:
        pids = json.loads(pidfile.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return DaemonState(running=False)
    daemon = pids.pop(DAEMON, None)
    if daemon is None or not _running(int(daemon)):
        return DaemonState(running=False, pid=daemon)
    return DaemonState(running=True, pid=int(daemon), since=started_at(int(daemon)),
                       children={n: int(p) for n, p in pids.items() if _running(int(p))})


def started_at(pid: int) -> float | None:
    """Unix time a process started (Linux /proc; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as fh:
            boot = next(int(line.split()[1]) for line in fh if line.startswith("btime "))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def connected_to(pid: int, host: str, port: int) -> bool:
    """True when process `pid` holds an established TCP connection to host:port.

    Reads the process's socket inodes and the kernel's TCP tables (Linux /proc):
    a SuperNode keeps its gRPC connection to the SuperLink open while it is in the
    federation, so this says "connected", not merely "running".
    """
    try:
        inodes = {os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1]
                  for fd in os.listdir(f"/proc/{pid}/fd")
                  if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:[")}
        wanted = {_plain_ip(info[4][0]) for info in socket.getaddrinfo(host, port)}
    except OSError:
        return False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            for line in list(fh)[1:]:
                cols = line.split()
                if cols[3] != "01" or cols[9] not in inodes:  # 01: ESTABLISHED
                    continue
                address, _, hex_port = cols[2].partition(":")
                if int(hex_port, 16) == port and _proc_ip(address) in wanted:
                    return True
    return False


def _plain_ip(text: str) -> str:
    ip = ipaddress.ip_address(text.split("%")[0])
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)


def _proc_ip(hex_address: str) -> str:
    """An address as /proc/net/tcp{,6} writes it (32-bit words in host byte order)."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)) \
        if sys.byteorder == "little" else raw
    return _plain_ip(str(ipaddress.ip_address(words)))
