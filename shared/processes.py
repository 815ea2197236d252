"""The processes fedehr starts (SuperLink, SuperNodes, site workers) and how they stop.

Every child is started in its own process group, logs to a file, and is
recorded in a PID file, so that Ctrl-C, normal exit, a later `stop` command
or a test's teardown can stop all of it; no stray SuperLink is left behind.

PIDs are reused (after a crash, a reboot), so a PID file also records what
identifies each process (its start time and command line), and a `stop`
signals only a process that still matches. A daemon holds an exclusive lock
beside its PID file for as long as it runs, so a second start is refused at
once, naming the holder, before it touches anything.
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


def ensure_port_free(host: str, port: int, *, where: str) -> None:
    """ProcessError at once if another program listens on host:port (a child started
    there would log "address in use" while its parent waited for the wrong listener)."""
    import errno

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a server binds
        try:
            probe.bind((host or "0.0.0.0", port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise ProcessError(f"cannot listen on {host}:{port} ({exc.strerror})",
                                   where=where, fix="check the host address") from None
            raise ProcessError(f"{host}:{port} is already in use by another program",
                               where=where, fix="stop that program (`ss -ltnp` shows it) or "
                               "choose another port") from None


def _log_says_in_use(log: Path | None, since: int) -> str | None:
    """The line of a child's log (from byte `since`: this run's part) that reports its
    address is taken, if any."""
    if log is None:
        return None
    try:
        with open(log, "rb") as fh:
            fh.seek(max(since, fh.seek(0, os.SEEK_END) - 8192))
            tail = fh.read().decode(errors="replace")
    except OSError:
        return None
    for line in reversed(tail.splitlines()):
        if "address already in use" in line.lower() or "failed to bind" in line.lower():
            return line.strip()[-300:]
    return None


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None,
                  log: Path | None = None, log_from: int = 0) -> None:
    """Wait until host:port accepts; fail at once if `proc` exits or its log (from byte
    `log_from`) says the address is in use."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ProcessError(f"exited with code {proc.returncode} before listening on "
                               f"{host}:{port}", where=" ".join(proc.args[:1]),
                               fix=f"read its log{f' {log}' if log else ''}")
        in_use = _log_says_in_use(log, log_from)
        if in_use:
            raise ProcessError(f"cannot listen on {host}:{port}: {in_use}", where=str(log),
                               fix="stop the program holding that port or choose another")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.2)
    raise ProcessError(f"nothing listening on {host}:{port} after {timeout:.0f} s",
                       fix=f"read the log{f' {log}' if log else ''}")


DAEMON = "daemon"  # the PID file's entry for the supervising process itself
IDENTITIES = "identities"  # the PID file's entry: name -> what identifies that process

_held_locks: dict[Path, int] = {}  # lock file -> open descriptor, kept for the process's life


def hold_daemon_lock(pidfile: Path, what: str) -> None:
    """Take the exclusive lock of the daemon whose PID file is `pidfile`, for good.

    A second daemon on the same state folder is refused at once, with the holder's
    PID; the lock ends with the process, however it ends (no stale lock after -9).
    """
    import fcntl

    lock = pidfile.with_suffix(".lock")
    if lock in _held_locks:
        return
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ProcessError(f"{what} already runs on this state folder (pid {holder})",
                           where=str(lock.parent),
                           fix="stop it first, or use another state folder") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held_locks[lock] = fd


def process_identity(pid: int) -> dict | None:
    """What tells process `pid` apart from a later one with the same PID: its start time
    (clock ticks since boot) and command line; None when it is not running. Linux /proc;
    elsewhere ``{}`` for a running process (nothing to compare)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except FileNotFoundError:
        return None
    except OSError:
        return {} if _running(pid) else None
    if fields[0] == "Z":
        return None
    return {"start": fields[19], "cmdline": cmdline[:500]}


def same_process(pid: int, recorded: dict | None) -> bool:
    """True when `pid` runs and is still the process `recorded` described. A record
    without identity (an old PID file) matches nothing where /proc could have told."""
    now = process_identity(pid)
    if now is None:
        return False
    if not now:  # no /proc here: liveness is all anyone can know
        return True
    # The start time tells PIDs apart. A command line recorded empty was read while
    # the child was still inside exec (Popen returns before the kernel has set up its
    # arguments), so it cannot disagree with the one it has now.
    return bool(recorded) and recorded.get("start") == now["start"] \
        and recorded.get("cmdline") in ("", now["cmdline"])


def read_pidfile(pidfile: Path) -> tuple[dict[str, int], dict[str, dict]]:
    """``(name -> pid, name -> identity)`` from a PID file; ({}, {}) when absent or unreadable."""
    try:
        raw = json.loads(pidfile.read_text())
    except (FileNotFoundError, ValueError, OSError):
        return {}, {}
    if not isinstance(raw, dict):
        return {}, {}
    identities = raw.pop(IDENTITIES, {})
    pids = {str(n): int(p) for n, p in raw.items()
            if isinstance(p, int) and not isinstance(p, bool) and p > 0}
    return pids, identities if isinstance(identities, dict) else {}


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

    def stop_all(self, timeout: float = 10.0) -> None:
        """End every child at once, under one shared deadline rather than one per child
        in turn."""
        procs = [self.procs.pop(name) for name in reversed(list(self.procs))]
        terminate_groups([p.pid for p in procs], timeout)
        for proc in procs:
            with contextlib.suppress(Exception):
                proc.wait(timeout=1)
        if self.pidfile is not None:
            with contextlib.suppress(FileNotFoundError):
                self.pidfile.unlink()

    def _write_pidfile(self) -> None:
        if self.pidfile is not None:
            # The daemon itself first: `stop` asks it to shut down in order, and only
            # then ends children it left behind (a daemon killed with -9, say).
            pids = {DAEMON: os.getpid()}
            pids.update({n: p.pid for n, p in self.procs.items() if p.poll() is None})
            identities = {n: process_identity(pid) for n, pid in pids.items()}
            pids[IDENTITIES] = {n: i for n, i in identities.items() if i}
            write_text(self.pidfile, json.dumps(pids, indent=2))


def terminate_group(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM a process group, wait, then SIGKILL what is left."""
    terminate_groups([pid], timeout)


def terminate_groups(pids: list[int], timeout: float = 10.0) -> None:
    """SIGTERM several process groups at once, wait for all of them until one
    deadline, then SIGKILL what is left."""
    left = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
            left.append(pid)
    deadline = time.monotonic() + timeout
    while left and time.monotonic() < deadline:
        for pid in list(left):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                left.remove(pid)
        time.sleep(0.1)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def stop_from_pidfile(pidfile: Path) -> list[str]:
    """Stop every process recorded in a PID file that is still the process recorded
    (used by `stop` commands); returns the names signalled. A PID now used by another
    process is left alone."""
    if not pidfile.exists():
        return []
    pids, identities = read_pidfile(pidfile)
    ours = {name: pid for name, pid in pids.items()
            if pid != os.getpid() and same_process(pid, identities.get(name))}
    daemon = ours.pop(DAEMON, None)
    if daemon is not None:
        _terminate_daemon(daemon)
    for name, pid in ours.items():
        if same_process(pid, identities.get(name)):  # the daemon may have stopped it
            terminate_group(pid)
    pidfile.unlink(missing_ok=True)
    return ([DAEMON] if daemon is not None else []) + list(ours)


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
    """Whether the daemon recorded in `pidfile` runs, since when, and its live children
    (a recorded identity must still match: a reused PID is not the daemon)."""
    pids, identities = read_pidfile(pidfile)

    def alive(name: str, pid: int) -> bool:
        recorded = identities.get(name)
        return same_process(pid, recorded) if recorded else _running(pid)

    daemon = pids.pop(DAEMON, None)
    if daemon is None or not alive(DAEMON, daemon):
        return DaemonState(running=False, pid=daemon)
    return DaemonState(running=True, pid=daemon, since=started_at(daemon),
                       children={n: p for n, p in pids.items() if alive(n, p)})


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
