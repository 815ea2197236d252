"""`fedehr site ...`: hospital IT's commands to run and inspect the site daemon."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from fedehr.shared.errors import FedEHRError
from fedehr.shared.logs import DaemonConsole

app = typer.Typer(help="Run this hospital's site daemon and inspect its privacy ledger.",
                  no_args_is_help=True)
console = Console(width=None if sys.stdout.isatty() else 140)
say = DaemonConsole("fedehr.site", console)  # the daemon's own lines (JSON on request)

CONFIG = typer.Option(..., "--config", "-c", help="This hospital's site.yaml (paths in it "
                      "are relative to the file, not to the working directory).")
EARLY_EXIT_SECONDS = 15.0  # a SuperNode refused at its first start has exited by then


class SiteStartError(FedEHRError):
    """The site daemon could not join the federation."""


def _preflight(config: Path, site) -> int:
    """`fedehr site check` at start: a red line stops the daemon, amber ones are logged.
    Returns the number of patients."""
    from rich.markup import escape

    from fedehr.client.preflight import site_checks
    from fedehr.shared.data.dataset import MEDSDataset

    checks = site_checks(config, at_start=True)
    red = [c for c in checks if c.level == "red"]
    if red:
        raise SiteStartError(f"{len(red)} pre-flight check(s) red, first: {red[0].name}: "
                             f"{red[0].message}", where=str(config),
                             fix=f"{red[0].fix}; see `fedehr site check --config {config}`")
    for check in checks:
        if check.level == "amber":
            say.warn(escape(check.line()))
    return MEDSDataset.open(site.data).subject_splits().height  # valid: no red line


@app.command("check")
def check(config: Path = CONFIG) -> None:
    """Pre-flight check: everything that would make the first run fail or mislead.

    One line per check, green, amber or red, with the fix: site.yaml and its
    paths, the MEDS data, the privacy budget left, certificates and site key,
    approval settings, the SuperLink over TLS, disk space, metrics address.
    Exit code 0 all green, 1 any red, 2 amber only. Writes nothing.

    Example: fedehr site check --config site.yaml
    """
    from fedehr.client.preflight import site_checks
    from fedehr.shared.preflight import exit_code, render

    checks = site_checks(config)
    for line in render(checks):
        console.print(line, highlight=False, soft_wrap=True)
    raise typer.Exit(exit_code(checks))


def _flower_error(said: str) -> str:
    """Flower's own reason in what a SuperNode logged (its last "[code: N] ..." line, e.g.
    "[code: 2004] Failed to activate SuperNode."), else its last three lines."""
    lines = said.strip().splitlines()
    coded = [line for line in lines if line.startswith("[code:")]
    return coded[-1] if coded else " | ".join(lines[-3:])


def _last_lines(path: Path, n: int = 3) -> str:
    """The log's last `n` lines on one line, without terminal colour codes."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    from fedehr.client.supernode import strip_colours

    return " | ".join(strip_colours(text).strip().splitlines()[-n:])


@app.command("start")
def start(config: Path = CONFIG,
          isolation: str = typer.Option(
              "worker", "--isolation",
              help="worker (default): the site's long-lived worker runs only approved "
                   "bundles with the installed fedehr, warm between messages. subprocess: "
                   "Flower's fresh flwr-clientapp per message, no approval check "
                   "(for comparison only).")) -> None:
    """Join the federation: run the pre-flight checks, then the SuperNode and worker.

    The checks are those of `fedehr site check`: a red one stops the start,
    amber ones are logged (a SuperLink not yet reachable is amber here; the
    SuperNode keeps trying).

    Stays in the foreground (systemd runs it as a service) and restarts the
    SuperNode and the site worker if they crash. Once the site has joined, a lost
    consortium (link down, SuperLink restarted) never stops the daemon: it retries
    with capped exponential backoff (site.yaml reconnect_max_seconds) and says so in
    `fedehr site status` and its metrics; a site refused at its first start (key,
    certificate) stops at once with the cause. The privacy ledger lives in
    state_dir and is never reset: epsilon accumulates across rounds, runs and
    restarts. Only bundles approved in site.yaml (`approval:`) run here.

    Example: fedehr site start --config site.yaml
    """
    from rich.markup import escape

    from fedehr.client.config import load_site_config
    from fedehr.client.privacy.budget import announcement, trial_tag
    from fedehr.client.site_handlers import check_can_join, open_ledger
    from fedehr.client.supernode import (
        FIRST_REJOIN_SECONDS,
        ISOLATIONS,
        Backoff,
        LinkWatch,
        new_worker_secret,
        start_supernode,
    )
    from fedehr.shared.processes import (
        ProcessError,
        Supervisor,
        exit_on_sigterm,
        hold_daemon_lock,
    )

    if isolation not in ISOLATIONS:
        raise SiteStartError(f"unknown isolation {isolation!r}", where="--isolation",
                             fix=f"use one of: {', '.join(ISOLATIONS)}")
    exit_on_sigterm()
    site = load_site_config(config)
    hold_daemon_lock(site.state_dir / "site.pid", f"the daemon of site {site.name}")  # first
    patients = _preflight(config, site)
    ledger = open_ledger(site)  # checked against the activity log: a mismatch refuses
    check_can_join(site, ledger)
    p = site.privacy
    say.print(f"{trial_tag(p.trial)}site [bold]{site.name}[/]: {patients:,} patients in "
              f"{site.data}; epsilon {ledger.spent():.3f} of {p.epsilon:g} spent (delta "
              f"{p.delta:g}, {p.accountant}); ledger {site.ledger_path}")
    say.print(announcement(ledger, None, p.run_budget, trial=p.trial))
    supervisor = Supervisor(pidfile=site.state_dir / "site.pid")
    log = site.state_dir / "logs" / "supernode.log"
    secret = new_worker_secret(site) if isolation == "worker" else None
    worker = _WorkerKeeper(supervisor, site, config, secret) if secret else None
    if worker is None:
        say.warn("isolation subprocess: Flower runs each bundle's own ClientApp; "
                 "bundle approval is not checked on this path")
    monitor = _serve_metrics(site, supervisor)
    watch = LinkWatch(site, log)
    rejoin = Backoff(FIRST_REJOIN_SECONDS, site.reconnect_max_seconds)
    admitted, restarts = False, 0  # once in, a lost consortium is waited out, never a stop
    try:
        while True:
            watch.new_supernode()
            try:
                start_supernode(supervisor, site, config, log=log, isolation=isolation,
                                secret_file=secret)
                say.print(f"SuperNode started for {site.superlink}; logs in "
                          f"{site.state_dir}/logs")
                while supervisor.alive(f"supernode-{site.name}"):
                    if worker is not None:
                        worker.keep_alive()
                    _say_all(watch.poll())
                    if watch.admitted:
                        rejoin.reset()
                    time.sleep(1)
            except ProcessError:
                pass  # exited before it listened: judged below like any other exit
            _say_all(watch.poll())
            admitted = admitted or watch.admitted
            if not admitted:  # never got in: refused (key, certificate), not a lost link
                raise SiteStartError(f"the SuperNode was refused or failed at start: "
                                     f"{_flower_error(watch.since_start())}",
                                     where=site.superlink,
                                     fix="check superlink address, ca_certificate and "
                                     "auth_key; ask the operator to register this site "
                                     "(`fedehr server register NAME`)")
            # After a crash the SuperLink counts the old session as online until its
            # heartbeat lapses (about a minute) and refuses a second activation: retried
            # every few seconds; an unreachable SuperLink is backed off.
            said = _flower_error(watch.since_start())[:200]
            wait, lines = watch.supernode_gone(said, rejoin)
            restarts += 1
            _say_all(lines)
            say.warn(escape(f"SuperNode exited ({said}); restart {restarts}/unlimited in "
                            f"{wait:g} s"))
            time.sleep(wait)
    finally:
        if monitor is not None:
            monitor.stop()
        supervisor.stop_all()


def _say_all(lines: list[tuple[str, str]]) -> None:
    from rich.markup import escape

    for level, text in lines:
        (say.warn if level == "warn" else say.print)(escape(text))


class _WorkerKeeper:
    """Starts the site worker and restarts it whenever it exits (crash, kill, OOM).

    A worker that dies mid-task leaves that task to the SuperNode, which gives
    it up after its heartbeat lapses (the server sees the site drop out of that
    round); the restarted worker serves the next messages. The ledger is on
    disk and charged once per round id, so nothing is charged twice.
    """

    FAST_FAILURES = 5  # in a row, each within FAST_SECONDS of starting: a broken install
    FAST_SECONDS = 10.0

    def __init__(self, supervisor, site, config: Path, secret: Path):
        self.supervisor, self.site, self.config, self.secret = supervisor, site, config, secret
        self.started_at, self.fast_failures, self.restarts = 0.0, 0, 0
        self.log = site.state_dir / "logs" / "worker.log"

    def keep_alive(self) -> None:
        from fedehr.client.supernode import start_worker, worker_name

        if self.supervisor.alive(worker_name(self.site)):
            return
        if self.started_at:
            quick = time.monotonic() - self.started_at < self.FAST_SECONDS
            self.fast_failures = self.fast_failures + 1 if quick else 0
            if self.fast_failures >= self.FAST_FAILURES:
                raise SiteStartError(f"the site worker exited {self.fast_failures} times "
                                     f"right after starting: {_last_lines(self.log)}",
                                     where=str(self.log), fix="read the worker log")
            self.restarts += 1
            say.warn(f"site worker exited; restarting ({self.restarts})")
        start_worker(self.supervisor, self.site, self.config, self.secret, log=self.log)
        self.started_at = time.monotonic()


def _serve_metrics(site, supervisor):
    """/metrics and /healthz on site.metrics_port (healthy while the SuperNode runs)."""
    if site.metrics_port is None:
        return None
    from fedehr.client.metrics import metrics_server

    monitor = metrics_server(site, health=lambda: supervisor.alive(f"supernode-{site.name}")
                             ).start()
    say.print(f"metrics on {monitor.url}/metrics, health on {monitor.url}/healthz")
    return monitor


@app.command("stop")
def stop(config: Path = CONFIG) -> None:
    """Stop a site daemon started from this site.yaml."""
    from fedehr.client.config import load_site_config
    from fedehr.shared.processes import stop_from_pidfile

    site = load_site_config(config)
    stopped = stop_from_pidfile(site.state_dir / "site.pid")
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@app.command("status")
def status(config: Path = CONFIG,
           last: int = typer.Option(10, min=0, help="How many recent messages to list.")) -> None:
    """Show whether the site daemon runs, then the privacy ledger and recent messages.

    Example: fedehr site status --config site.yaml
    """
    from rich.markup import escape

    from fedehr.client.config import load_site_config

    site = load_site_config(config)
    console.print(escape(daemon_line(site, config)), highlight=False)  # Flower's "[code: N]"
    console.print(_ledger_table(site))
    console.print(_activity_table(site, last))


def _ledger_table(site):
    """The ledger's charges, read without writing anything (a missing ledger stays
    missing; a problem is a line in red, not a repair). Epsilon is recomputed."""
    from rich.markup import escape

    from fedehr.client import activity
    from fedehr.client.privacy.budget import trial_tag
    from fedehr.client.site_handlers import (
        SiteRefusal,
        charging_events,
        check_against_activity,
        read_ledger,
    )

    p, tag = site.privacy, trial_tag(site.privacy.trial)
    events = activity.read(site.state_dir)
    try:
        ledger = read_ledger(site)
        if ledger is not None:
            check_against_activity(site, ledger, events)
    except (SiteRefusal, FedEHRError) as exc:
        return f"[red]{escape(tag + exc.one_line())}[/]"
    if ledger is None:
        released = charging_events(site, events)
        if released and not p.new_ledger:
            return (f"[red]{escape(tag)}the privacy ledger {site.ledger_path} is missing but "
                    f"the activity log records {len(released)} releases: restore it from "
                    "backup (the site refuses to train)[/]")
        return f"{escape(tag)}no privacy ledger yet: nothing released; budget {p.epsilon:g}"
    table = Table(title=f"{escape(tag)}{site.name}: epsilon {ledger.spent():.3f} of "
                        f"{p.epsilon:g} (remaining {max(0.0, p.epsilon - ledger.spent()):.3f}, "
                        f"at most {p.run_budget:g} per run, delta {p.delta:g}, "
                        f"{p.accountant})")
    for col in ("charged at", "purpose", "round", "noise", "sample rate", "steps",
                "epsilon after (recomputed)"):
        table.add_column(col)
    entries = ledger.entries
    for i, e in enumerate(entries):
        table.add_row(e.charged_at, e.purpose, e.round_id or "-", f"{e.noise_multiplier:.3f}",
                      f"{e.sample_rate:.4f}", str(e.steps),
                      f"{ledger.spent_by(entries[:i + 1]):.3f}")
    return table


def daemon_line(site, config: Path) -> str:
    """Is the site daemon running (since when), and is its SuperNode connected?"""
    from datetime import UTC, datetime

    from fedehr.client.supernode import read_link
    from fedehr.shared.processes import connected_to, daemon_state

    state = daemon_state(site.state_dir / "site.pid")
    if not state.running:
        return f"daemon: not running (start it: fedehr site start --config {config})"
    since = "" if state.since is None else " since " + \
        datetime.fromtimestamp(state.since, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    supernode = state.children.get(f"supernode-{site.name}")
    host, _, port = site.superlink.rpartition(":")
    seen = read_link(site.state_dir)  # the daemon's own view, while the consortium is lost
    if seen is not None and not seen.reachable:
        link = seen.outage_line()
    elif supernode is None:
        link = "its SuperNode is not running (restarting, or refused: see state_dir/logs)"
    elif connected_to(supernode, host.strip("[]"), int(port)):
        link = f"its SuperNode is connected to {site.superlink}"
    else:
        link = f"its SuperNode is NOT connected to {site.superlink} (see state_dir/logs)"
    return f"daemon: running{since} (pid {state.pid}); {link}"


@app.command("patients")
def patients(data: Path = typer.Option(..., "--data", help="The hospital's MEDS root (site.yaml "
                                       "data:)."),
             subject_id: int = typer.Option(None, "--id", min=0, max=2**63 - 1,
                                           help="Show this subject_id only."),
             code: str = typer.Option(None, "--code", help="Patients with an event whose code "
                                      "matches this regular expression."),
             description: str = typer.Option(None, "--description", help="Patients with an "
                                             "event whose code description contains these "
                                             "words (metadata/codes.parquet)."),
             split: str = typer.Option(None, "--split", help="train, tuning or held_out."),
             limit: int = typer.Option(20, "--limit", min=1, help="Most rows shown.")) -> None:
    """Find patients for `fedehr model ask --patient`: by id or by a cohort predicate.

    Lists subject_id, split, number of events, first and last event time (and
    the matching events with --code/--description). Run it at the hospital, as
    someone allowed to see its records: the output names real patients.

    Example: fedehr site patients --data /srv/fedehr/meds --description creatinine
    --split held_out
    """
    from fedehr.shared.data.patients import find_patients

    found = find_patients(data, subject_id=subject_id, code=code, description=description,
                          split=split, limit=limit)
    table = Table(title=f"{found.height} patient(s) (at most {limit}) in {data}")
    for col in found.columns:
        table.add_column(col)
    for row in found.iter_rows():
        table.add_row(*("-" if v is None else str(v) for v in row))
    console.print(table)


def _activity_table(site, last: int) -> Table:
    """What the site sent or refused, newest last (from state_dir/activity.jsonl)."""
    from datetime import UTC, datetime

    from fedehr.client import activity

    table = Table(title=f"last {last} messages answered (everything sent leaves a line)")
    for col in ("time (UTC)", "what", "round", "details"):
        table.add_column(col)
    for event in activity.read(site.state_dir)[-last:]:
        when = datetime.fromtimestamp(event["time"], UTC).strftime("%Y-%m-%d %H:%M:%S")
        if event["kind"] == "train":
            details = (f"{event['steps']} DP steps, {event['patients']} patients, "
                       f"epsilon now {event['epsilon']:.3f}")
        elif event["kind"] == "evaluate" and "loss" in event:
            details = f"held-out loss {event['loss']:.3f} on {event['patients']} patients"
        elif event["kind"] == "evaluate" and event.get("released") == "noised":
            details = f"noised held-out loss, epsilon now {event.get('epsilon', 0):.3f}"
        elif event["kind"] == "evaluate":
            details = "no loss released (privacy.release_metrics: none)"
        elif event["kind"] == "refusal":
            details = str(event.get("reason", ""))[:120]
        else:
            details = f"DP counts/sketches, epsilon now {event.get('epsilon', 0):.3f}"
        table.add_row(when, event["kind"], str(event.get("round_id", "-")), details)
    return table
