"""Launching a federated run on a running SuperLink and following it to the end.

`launch` ships the configuration-only bundle with `flwr run`; `watch` follows
the ServerApp's status file and shows rounds, participation, losses and each
site's epsilon as they come: a live table on a terminal, and one plain line
per event (phase entered, round done) plus the final table once when stdout is
not a terminal (a script, a CI job, a systemd unit; rich's Console.is_terminal).
Success is read from the status file (or `flwr ls`), never from `flwr run`'s
exit code, which is 0 even for a failed run.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from fedehr.server.bundle import SERVERAPP, SIGNATURE_KEY, clientapp_for, sign_bundle, write_bundle
from fedehr.server.config import FederationConfig
from fedehr.server.status import read_status
from fedehr.server.superlink import CONNECTION, bin_path, flwr_cli
from fedehr.shared.atomic import write_text
from fedehr.shared.errors import FedEHRError
from fedehr.shared.processes import ProcessError, Supervisor, flower_env


class RunFailed(FedEHRError):
    """The federated run ended in failure."""


def run_file(cfg: FederationConfig) -> Path:
    return cfg.workdir / "run.json"


def shipped_bundle(cfg: FederationConfig, config_path: Path, *, clientapp: str | None = None,
                   serverapp: str = SERVERAPP) -> Path:
    """The bundle folder `launch` ships (its FAB hash is what sites approve by hash)."""
    return write_bundle(cfg.workdir / "bundle", config_path, serverapp=serverapp,
                        clientapp=clientapp or clientapp_for(cfg.secure_aggregation))


def launch(cfg: FederationConfig, config_path: Path, *, resume: bool = False,
           clientapp: str | None = None, serverapp: str = SERVERAPP) -> str:
    """Start the run on the SuperLink; returns Flower's run id.

    The bundle names the installed ClientApp the federation needs (the SecAgg+ one
    with `secure_aggregation: true`) unless a test passes its own.
    """
    if not resume:
        cfg.status_path.unlink(missing_ok=True)
    bundle = shipped_bundle(cfg, config_path, clientapp=clientapp, serverapp=serverapp)
    fab_hash, signature = sign_bundle(bundle, cfg.pki)
    overrides = f"resume={'true' if resume else 'false'}"
    if signature is not None:
        # The signature rides in the run config, which the operator controls anyway: that
        # is safe because each site verifies it against its own trusted bundle.pub, over
        # the FAB hash it computes itself from the bundle it received.
        overrides += f" {SIGNATURE_KEY}='{signature}'"
    launched = time.time()  # before Flower starts the ServerApp, which writes the status
    data = flwr_cli(cfg.flwr_home, "run", str(bundle), CONNECTION, "--run-config", overrides,
                    timeout=120)
    run_id = str(data["run-id"])
    write_text(run_file(cfg), json.dumps({"run-id": run_id, "started_at": launched,
                                          "resume": resume, "bundle-hash": fab_hash,
                                          "signed": signature is not None}))
    return run_id


def follow_log(supervisor: Supervisor, cfg: FederationConfig, run_id: str) -> Path:
    """Keep the ServerApp's log (Flower streams it per run) in the workdir."""
    log = cfg.workdir / "logs" / f"run-{run_id}.log"
    supervisor.start(f"log-{run_id}", [bin_path("flwr"), "log", run_id, CONNECTION, "--stream"],
                     log=log, env=flower_env(cfg.flwr_home))
    return log


def flower_run_status(cfg: FederationConfig, run_id: str) -> str:
    data = flwr_cli(cfg.flwr_home, "ls", CONNECTION, "--run-id", run_id)
    runs = data.get("runs", []) if isinstance(data, dict) else []
    return str(runs[0].get("status", "unknown")) if runs else "unknown"


def status_table(status: dict | None, cfg: FederationConfig) -> Table:
    title = "federation " + cfg.name
    if status:
        title += f": {status.get('phase')} (round {status.get('round', 0)}/{cfg.rounds})"
    table = Table(title=title, caption=(status or {}).get("message", ""))
    for col in ("round", "sites", "anchor loss", "site eval loss", "epsilon per site",
                "rejected", "late", "seconds"):
        table.add_column(col)
    for entry in (status or {}).get("rounds", []):
        eps = entry.get("epsilon", {})
        evals = entry.get("site_eval_loss", {})
        table.add_row(
            str(entry["round"]),
            ", ".join(entry.get("participants", entry.get("sites", []))) or "-",
            f"{entry.get('anchor_loss', float('nan')):.3f}",
            _per_site(evals),
            _per_site(eps),
            ", ".join(entry.get("rejected", {})) or "-",
            ", ".join(entry.get("late", [])) or "-",
            str(entry.get("seconds", "")))
    return table


def _per_site(values: dict) -> str:
    return " ".join(f"{s[-1] if s.startswith('hospital_') else s}:{v:.2f}"
                    for s, v in sorted(values.items())) or "-"


def progress_lines(before: dict | None, after: dict | None) -> list[str]:
    """One plain line per event between two status snapshots: a phase entered, a round
    done (what `watch` prints when stdout is not a terminal)."""
    if after is None:
        return []
    before = before or {}
    lines = []
    if after.get("phase") != before.get("phase"):
        message = after.get("message") or ""
        lines.append(f"phase {after.get('phase')}" + (f": {message}" if message else ""))
    seen = {entry["round"] for entry in before.get("rounds", [])}
    for entry in after.get("rounds", []):
        if entry["round"] in seen:
            continue
        sites = ", ".join(entry.get("participants", entry.get("sites", []))) or "-"
        lines.append(f"round {entry['round']} done: sites {sites}; anchor loss "
                     f"{entry.get('anchor_loss', float('nan')):.3f}; site eval loss "
                     f"{_per_site(entry.get('site_eval_loss', {}))}; epsilon "
                     f"{_per_site(entry.get('epsilon', {}))}; rejected "
                     f"{', '.join(entry.get('rejected', {})) or '-'}"
                     + (f"; late {', '.join(entry['late'])}" if entry.get("late") else ""))
    return lines


FLOWER_CHECK_TRIES = 3  # Flower's view of the run unreadable this many times in a row: give up


def watch(cfg: FederationConfig, run_id: str, console: Console, *, timeout: float = 3600,
          poll: float = 1.0, flower_check: float = 10.0) -> dict:
    """Follow the run until it finishes; returns its result or raises RunFailed.

    Every `flower_check` seconds it also asks Flower whether the run is still alive
    (a ServerApp that died writes no status). One unanswered question is a busy host,
    not a dead run: the watch gives up only after FLOWER_CHECK_TRIES in a row."""
    deadline = time.monotonic() + timeout
    last_flower_check, unanswered = 0.0, 0
    live = console.is_terminal
    previous: dict | None = None
    display = Live(status_table(None, cfg), console=console, refresh_per_second=2) \
        if live else contextlib.nullcontext()
    launched = _launched_at(cfg, run_id)
    with display:
        while True:
            status = read_status(cfg.status_path)
            if status and status.get("started_at", launched) < launched:
                status = None  # the last run's (kept on resume) until this one writes
            if live:
                display.update(status_table(status, cfg))
            else:
                for line in progress_lines(previous, status):
                    console.print(line, markup=False, highlight=False, soft_wrap=True)
                previous = status or previous
            phase = (status or {}).get("phase")
            if phase in ("finished", "failed") and not live:
                console.print(status_table(status, cfg))
            if phase == "finished":
                return status["result"]
            if phase == "failed":
                raise RunFailed(status.get("message", "the run failed"), where=f"run {run_id}",
                                fix=f"read {cfg.workdir}/logs/run-{run_id}.log; resume "
                                    "with `fedehr run start --resume`")
            if time.monotonic() - last_flower_check > flower_check:  # died silently?
                last_flower_check = time.monotonic()
                try:
                    flower, unanswered = flower_run_status(cfg, run_id), 0
                except ProcessError as exc:
                    unanswered += 1
                    if unanswered >= FLOWER_CHECK_TRIES:
                        raise RunFailed(f"Flower did not say how the run is going, "
                                        f"{unanswered} times in a row: {exc.message}",
                                        where=f"run {run_id}", fix=exc.fix) from None
                    flower = "unknown"
                if flower.startswith("finished") and phase not in ("finished", "failed"):
                    time.sleep(2 * poll)
                    if (read_status(cfg.status_path) or {}).get("phase") != "finished":
                        raise RunFailed(f"Flower reports the run as {flower}",
                                        where=f"run {run_id}",
                                        fix="read the SuperLink log in the workdir")
            if time.monotonic() > deadline:
                raise RunFailed(f"no result after {timeout:.0f} s", where=f"run {run_id}",
                                fix="check `fedehr run status`; the run may still be going")
            time.sleep(poll)


def _launched_at(cfg: FederationConfig, run_id: str) -> float:
    """When `launch` started this run (0 if another run was launched from here since)."""
    try:
        shipped = json.loads(run_file(cfg).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return 0.0
    return float(shipped.get("started_at", 0.0)) if shipped.get("run-id") == run_id else 0.0


def stop(cfg: FederationConfig) -> str:
    path = run_file(cfg)
    if not path.exists():
        raise FedEHRError("no run was started from this workdir", where=str(path),
                          fix="start one with `fedehr run start --config ...`")
    run_id = json.loads(path.read_text())["run-id"]
    flwr_cli(cfg.flwr_home, "stop", run_id, CONNECTION)
    return run_id


# -- what the run will spend, shown before it starts (issue 13, "no surprise spending") --


def budget_preview(cfg: FederationConfig, *, resume: bool = False) -> list[str]:
    """One line per expected site: its remaining budget and the most this run may
    spend there, as far as the server knows it from the sites' last reports (the
    latest checkpoint's model card, else the last run's status). A site's own
    ledger decides; it logs the same numbers when the run's first request arrives."""
    reported = last_privacy_reports(cfg)
    return [_preview_line(site, reported.get(site), resume=resume) for site in cfg.sites]


def last_privacy_reports(cfg: FederationConfig) -> dict[str, dict]:
    marker = cfg.checkpoints_dir / "latest"
    card = cfg.checkpoints_dir / marker.read_text().strip() / "model_card.json" \
        if marker.exists() else None
    with contextlib.suppress(OSError, ValueError, AttributeError):
        if card is not None:
            return dict(json.loads(card.read_text()).get("privacy") or {})
    status = read_status(cfg.status_path) or {}
    return dict((status.get("result") or {}).get("privacy") or {})


def _preview_line(site: str, report: dict | None, *, resume: bool) -> str:
    from fedehr.shared.privacy.accounting import epsilon_of

    if not report:
        return f"{site}: remaining budget and spend unknown until the site first replies"
    try:
        history = [(float(n), float(q), int(s)) for n, q, s in report.get("history") or []]
        spent = epsilon_of(history, delta=float(report["delta"]),
                           accountant=str(report.get("accountant", "rdp")))
        budget = float(report["epsilon_budget"])
    except (KeyError, TypeError, ValueError):
        return f"{site}: its last report cannot be read; spend unknown until it replies"
    remaining = max(0.0, budget - spent)
    share = report.get("epsilon_per_run")
    trial = "TRIAL ledger (sandbox): " if report.get("trial") else ""
    if share is None:
        spend = f"up to all of it ({remaining:.3f}; the site did not report a per-run share)"
    else:
        spend = f"up to {min(float(share), remaining):.3f}" + \
            (" less what this run has spent already" if resume else "")
    return (f"{site}: {trial}remaining epsilon {remaining:.3f} of lifetime {budget:g} "
            f"(last report); this run will spend {spend}")
