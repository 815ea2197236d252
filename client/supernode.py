"""Starting a hospital's Flower SuperNode.

The SuperNode connects out to the consortium's SuperLink over TLS, proves
its identity with the site key registered by the operator, and runs the
ClientApp for each message. Its node config names the site.yaml, which is
where the ClientApp reads everything about the site (data, budget, limits).

Two ways to run the ClientApp (`fedehr site start --isolation`):

- ``worker`` (default): the SuperNode runs with ``--isolation process`` and the
  site's own long-lived worker (fedehr.client.worker) claims its tasks,
  checks the bundle's approval and runs the installed fedehr. The two share a
  secret (``--superexec-auth-secret-file``) so no other local process can
  claim the site's tasks.
- ``subprocess``: Flower's default, a fresh `flwr-clientapp` per message that
  installs the bundle and imports whatever its clientapp component names.
  There is no approval check on this path: it is kept for comparison and
  benchmarks only.
"""

from __future__ import annotations

import json
import re
import secrets
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from fedehr.client.config import SiteConfig
from fedehr.shared.processes import Supervisor, flower_env, wait_for_port

ISOLATIONS = ("worker", "subprocess")


def worker_secret_path(site: SiteConfig) -> Path:
    return site.state_dir / "worker.secret"


def new_worker_secret(site: SiteConfig) -> Path:
    """A fresh shared secret for the SuperNode and its worker, readable by this user only."""
    from fedehr.shared.atomic import write_bytes

    path = worker_secret_path(site)
    write_bytes(path, secrets.token_bytes(32), mode=0o600)
    return path


def supernode_args(site: SiteConfig, site_config_path: Path, isolation: str = "subprocess",
                   secret_file: Path | None = None) -> list[str]:
    args = [str(Path(sys.executable).parent / "flower-supernode"),
            "--superlink", site.superlink, "--port", str(site.port),
            "--node-config", f"site-config='{site_config_path.resolve()}'"]
    if isolation == "worker":
        args += ["--isolation", "process"]
        if secret_file is not None:
            args += ["--superexec-auth-secret-file", str(secret_file)]
    if site.insecure:
        args.append("--insecure")
    else:
        args += ["--root-certificates", str(site.ca_certificate)]
    if site.auth_key is not None:
        args += ["--auth-supernode-private-key", str(site.auth_key)]
    return args


def start_supernode(supervisor: Supervisor, site: SiteConfig, site_config_path: Path,
                    *, log: Path | None = None, isolation: str = "subprocess",
                    secret_file: Path | None = None) -> None:
    """Start the SuperNode and wait until its local runtime port answers."""
    log = log or site.state_dir / "logs" / "supernode.log"
    env = flower_env(site.state_dir / "flwr-home", {"FEDEHR_SITE_CONFIG": str(site_config_path)})
    args = supernode_args(site, site_config_path, isolation, secret_file)
    proc = supervisor.start(f"supernode-{site.name}", args, log=log, env=env)
    wait_for_port("127.0.0.1", site.port, timeout=60, proc=proc, log=log)


def worker_name(site: SiteConfig) -> str:
    return f"worker-{site.name}"


def start_worker(supervisor: Supervisor, site: SiteConfig, site_config_path: Path,
                 secret_file: Path | None, *, log: Path | None = None) -> None:
    """Start the site worker (fedehr.client.worker) against the SuperNode's runtime port."""
    log = log or site.state_dir / "logs" / "worker.log"
    env = flower_env(site.state_dir / "flwr-home", {"FEDEHR_SITE_CONFIG": str(site_config_path)})
    args = [sys.executable, "-m", "fedehr.client.worker", "--config",
            str(site_config_path.resolve()), "--runtime-address", f"127.0.0.1:{site.port}"]
    if secret_file is not None:
        args += ["--secret-file", str(secret_file)]
    supervisor.start(worker_name(site), args, log=log, env=env)


# -- the consortium link, as the site daemon sees it ------------------------------------

LINK_STATE = "consortium.json"  # in state_dir: written by the daemon, read by status/metrics
FIRST_REJOIN_SECONDS = 5.0
# Flower 1.42's SuperNode logs these (flwr.supercore.retry.http_retry, start_client_internal);
# pinned `flwr==1.42.*`, exercised by tests/network/test_consortium_outage.py.
RETRYING = re.compile(r"Connection attempt failed, retrying in ([0-9.]+) seconds")
RECONNECTED = "Connection successful after"
ADMITTED = "SuperNode ID:"
# Lines only a SuperLink's answer produces. A retried call that ends in an answer other
# than success (the run stopped meanwhile: "not in RUNNING status") logs no RECONNECTED.
CONTACT = ("Received successfully", "Sent successfully", "is not in `RUNNING` status")
# A try that fails is logged within its wait plus the SuperNode's HTTP read timeout (30 s):
# past that, silence after a failure means a try got through (confirmed by a dial).
SILENCE_SECONDS = 35.0


def strip_colours(text: str) -> str:
    """`text` without terminal colour codes (Flower colours its log lines)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


UNPROBED = object()  # LinkWatch._lost: the daemon has not dialled the SuperLink itself


class Backoff:
    """Capped exponential waits: `first`, twice that, ... up to `cap`; `reset` starts over."""

    def __init__(self, first: float, cap: float):
        self.first, self.cap = first, max(first, cap)
        self.wait = first

    def next(self) -> float:
        wait, self.wait = self.wait, min(self.cap, self.wait * 2)
        return wait

    def reset(self) -> None:
        self.wait = self.first


@dataclass
class ConsortiumLink:
    """Whether this site reaches the consortium's SuperLink, as its daemon last saw it."""

    reachable: bool
    since: float  # Unix time of the last change
    retry_seconds: float = 0.0  # the wait between two tries now (while unreachable)
    cause: str = ""  # why not, in the words of `fedehr site check`, or Flower's
    answers: bool = False  # the SuperLink's port answered the daemon's own dial

    def outage_line(self, now: float | None = None) -> str:
        """What `fedehr site status` says while the consortium is unreachable."""
        when = datetime.fromtimestamp(self.since, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        lasted = (time.time() if now is None else now) - self.since
        for unit, seconds in (("h", 3600), ("min", 60), ("s", 1)):
            if lasted >= 2 * seconds or unit == "s":
                break
        what = "not back in the federation" if self.answers else "consortium unreachable"
        return (f"{what} since {when} (for {lasted / seconds:.0f} {unit}; {self.cause}), "
                f"retrying every {max(1, round(self.retry_seconds))} s")

    def save(self, state_dir: Path) -> None:
        from fedehr.shared.atomic import write_text

        write_text(state_dir / LINK_STATE, json.dumps(asdict(self)))


def read_link(state_dir: Path) -> ConsortiumLink | None:
    """The daemon's last word on the consortium link; None before its first contact."""
    try:
        return ConsortiumLink(**json.loads((state_dir / LINK_STATE).read_text()))
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None


class LinkWatch:
    """Follows the SuperNode's log for Flower's connection events and keeps `ConsortiumLink`.

    The SuperNode retries a lost SuperLink by itself (Flower's exponential backoff,
    at most 20 s apart, with no limit on tries or time) and logs each failed try and
    the first success; nothing else tells the daemon that the consortium is gone.
    When a try fails, the daemon dials the SuperLink once itself to name the cause
    (refused, no answer, no route: `connection_problem`). The way back is the success
    line, a line only the SuperLink's answer produces, or silence past the next try's
    deadline with the daemon's own dial answered: a retried push whose run stopped
    meanwhile gets back in without a success line. Writes state_dir/consortium.json on
    each change; returns what the daemon should say.
    """

    def __init__(self, site: SiteConfig, log: Path, *, clock=time.time, probe=None):
        self.site, self.log, self.clock = site, log, clock
        self.probe = probe or self._probe
        self.offset = self.started_at = 0
        self.partial = ""
        self.link: ConsortiumLink | None = None
        self.admitted = False  # the current SuperNode got its node id from the SuperLink
        self.failed_at: float | None = None  # the SuperNode's last failed try, if it retries
        (site.state_dir / LINK_STATE).unlink(missing_ok=True)  # an earlier daemon's

    def new_supernode(self) -> None:
        """A SuperNode starts: only its own admission counts from here."""
        self.offset = self.started_at = self.log.stat().st_size if self.log.exists() else 0
        self.partial, self.admitted, self.failed_at = "", False, None

    def since_start(self) -> str:
        """What the current SuperNode wrote to its log, without terminal colour codes."""
        try:
            with open(self.log, "rb") as fh:
                fh.seek(self.started_at)
                text = fh.read().decode(errors="replace")
        except FileNotFoundError:
            return ""
        return strip_colours(text)

    def poll(self) -> list[tuple[str, str]]:
        """Read the log's new lines; [(level, message)] for the daemon's own log."""
        said = []
        for line in self._new_lines():
            if ADMITTED in line:
                self.admitted = True
                said += self._reached()
            elif RECONNECTED in line or any(mark in line for mark in CONTACT):
                said += self._reached()
            elif found := RETRYING.search(line):
                self.failed_at = self.clock()
                said += self._lost(float(found.group(1)))
        if self._silent_since_failure() and self.probe() is None:
            said += self._reached()
        return said

    def _silent_since_failure(self) -> bool:
        """The SuperNode's last try failed long enough ago that a next failure would have
        been logged (checked again at most every SILENCE_SECONDS)."""
        link, now = self.link, self.clock()
        if self.failed_at is None or link is None or link.reachable:
            return False
        if now - self.failed_at < link.retry_seconds + SILENCE_SECONDS:
            return False
        self.failed_at = now  # the dial below is not repeated every poll
        return True

    def supernode_gone(self, reason: str, rejoin: Backoff) -> tuple[float, list[tuple[str, str]]]:
        """The SuperNode exited after it had been admitted, giving `reason` (Flower's, from
        its log): (seconds until the daemon tries again, what to say).

        A SuperLink that answers holds the site out only until the old session's heartbeat
        lapses (about a minute after a crash): tried again at the first wait, so the site is
        back within seconds of being let in. One that does not answer is backed off."""
        problem = self.probe()
        wait = rejoin.first if problem is None else rejoin.next()
        return wait, self._lost(wait, reason, problem)

    def _reached(self) -> list[tuple[str, str]]:
        if self.link is not None and self.link.reachable:
            return []
        was, now = self.link, self.clock()
        self.failed_at = None
        self._set(ConsortiumLink(True, now))
        if was is None:
            return []
        return [("print", f"consortium {self.site.superlink} reachable again after "
                          f"{now - was.since:.0f} s")]

    def _lost(self, retry: float, reason: str = "", problem: str | None | object = UNPROBED
              ) -> list[tuple[str, str]]:
        """The SuperNode failed a try (or exited, giving `reason`): an outage begins, or
        goes on with a new wait and, when the SuperLink answers, Flower's latest reason.
        `problem` is what the daemon's own dial found (None: it answers), when it dialled."""
        was = self.link
        ongoing = was is not None and not was.reachable
        if problem is UNPROBED:  # a dial at an outage's start; the last one's word after
            problem = (None if was.answers else was.cause) if ongoing else self.probe()
        answers = problem is None
        if not answers:
            cause = problem
        elif reason or not (ongoing and was.answers):
            cause = self._not_in(reason)
        else:
            cause = was.cause  # no new word from Flower: keep its last one
        if ongoing:
            if (was.retry_seconds, was.cause, was.answers) != (retry, cause, answers):
                self._set(ConsortiumLink(False, was.since, retry, cause, answers))
            return []
        self._set(ConsortiumLink(False, self.clock(), retry, cause, answers))
        what = "not back in the federation" if answers else "consortium unreachable"
        return [("warn", f"{what}: {cause}; retrying with backoff (next in {retry:.0f} s), "
                         "without end: the site rejoins by itself")]

    def _not_in(self, reason: str) -> str:
        return (f"the SuperLink at {self.site.superlink} answers but the SuperNode is not in: "
                f"{reason or 'see state_dir/logs/supernode.log'}")

    def _set(self, link: ConsortiumLink) -> None:
        self.link = link
        link.save(self.site.state_dir)

    def _probe(self) -> str | None:
        """Why the SuperLink's port does not answer this host (`fedehr site check`'s
        words); None when it does."""
        from fedehr.client.preflight import connection_problem

        host, _, port = self.site.superlink.rpartition(":")
        problem = connection_problem(host.strip("[]"), int(port))
        return None if problem is None else problem[0]

    def _new_lines(self) -> list[str]:
        try:
            with open(self.log, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        text = self.partial + chunk.decode(errors="replace")
        *lines, self.partial = text.split("\n")
        return lines
