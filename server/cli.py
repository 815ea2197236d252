"""`fedehr server ...` and `fedehr run ...`: the consortium operator's commands."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from fedehr.shared.errors import ConfigError, FedEHRError
from fedehr.shared.logs import DaemonConsole

server_app = typer.Typer(help="Start and stop the coordination server (Flower SuperLink).",
                         no_args_is_help=True)
run_app = typer.Typer(help="Launch, watch and stop federated runs.", no_args_is_help=True)
console = Console(width=None if sys.stdout.isatty() else 140)

CONFIG = typer.Option(..., "--config", "-c", help="The federation.yaml (paths in it are "
                      "relative to the file, not to the working directory).")


def _pki(cfg):
    from fedehr.shared.pki import PKIPaths

    if cfg.superlink.insecure:
        return None
    pki = PKIPaths.of(cfg.pki)
    for path, command in ((pki.ca_cert, "fedehr pki init"),
                          (pki.server_cert, "fedehr pki server --host ...")):
        if not path.exists():
            raise ConfigError(f"missing {path.name}", where=str(path),
                              fix=f"run `{command} --dir {cfg.pki}` first")
    return pki


def register_sites(cfg, pki, names: list[str]) -> Table:
    """Register each listed hospital's SuperNode key with the running SuperLink."""
    from fedehr.server.superlink import register_site

    table = Table(title="hospitals allowed to join")
    for col in ("site", "key", "node id"):
        table.add_column(col)
    for name in names:
        pub = pki.sites_dir / f"{name}.pub"
        if not pub.exists():
            table.add_row(name, "[red]missing[/]", f"run `fedehr pki site {name}`")
            continue
        try:
            table.add_row(name, str(pub), str(register_site(cfg.flwr_home, pub)))
        except FedEHRError as exc:
            already = "already" in exc.message.lower()
            table.add_row(name, str(pub), "registered before" if already else
                          f"[red]{exc.message}[/]")
    return table


@server_app.command("start")
def server_start(config: Path = CONFIG) -> None:
    """Start the SuperLink with TLS and hospital authentication; stays in the foreground.

    Registers the key of every site listed in federation.yaml (from the PKI
    folder), so exactly those hospitals can join. Ctrl-C stops everything.

    Example: fedehr server start --config federation.yaml
    """
    from fedehr.server.config import load_federation_config
    from fedehr.server.superlink import start_superlink
    from fedehr.shared.processes import Supervisor, exit_on_sigterm, hold_daemon_lock

    exit_on_sigterm()
    say = DaemonConsole("fedehr.server", console)
    cfg = load_federation_config(config)
    hold_daemon_lock(cfg.workdir / "server.pid", "the server")  # before touching anything
    pki = _pki(cfg)
    supervisor = Supervisor(pidfile=cfg.workdir / "server.pid")
    monitor = registry = None
    try:
        if cfg.metrics_port is not None:
            monitor = serve_metrics(cfg, lambda: supervisor.alive("superlink"))
            say.print(f"metrics on {monitor.url}/metrics, health on {monitor.url}/healthz")
        address = start_superlink(supervisor, host=cfg.superlink.host,
                                  port=cfg.superlink.port, pki=pki, flwr_home=cfg.flwr_home,
                                  log=cfg.workdir / "logs" / "superlink.log",
                                  database=cfg.workdir / "state" / "superlink.db")
        mode = "insecure (tests only)" if pki is None else "TLS + hospital authentication"
        say.print(f"SuperLink on [bold]{address}[/] ({mode}); logs in {cfg.workdir}/logs")
        if pki is not None:
            say.print(register_sites(cfg, pki, cfg.sites))
        if pki is not None and cfg.registry_port is not None:
            from fedehr.server.registry.service import start_registry

            registry, port = start_registry(cfg.workdir, cfg.pki, host=cfg.superlink.host,
                                            port=cfg.registry_port, audit_path=cfg.audit_path)
            say.print(f"checkpoint registry on {cfg.superlink.host}:{port} (mutual TLS)")
        say.print("Next: start the sites (`fedehr site start`), then "
                  f"`fedehr run start --config {config}`. Ctrl-C stops the server.")
        while supervisor.alive("superlink"):
            time.sleep(1)
        raise FedEHRError("the SuperLink exited", where=str(cfg.workdir / "logs"),
                          fix="read superlink.log")
    finally:
        if monitor is not None:
            monitor.stop()
        if registry is not None:
            registry.stop(grace=2)
        supervisor.stop_all()


def serve_metrics(cfg, health, port: int | None = None):
    """Serve the federation's /metrics and /healthz on the SuperLink's interface."""
    from fedehr.server.metrics import ServerCollector
    from fedehr.shared.monitoring import MonitoringServer

    collector = ServerCollector(cfg.workdir, cfg.audit_path)
    return MonitoringServer([collector], host=cfg.superlink.host,
                            port=cfg.metrics_port if port is None else port, health=health,
                            service=f"server {cfg.name}").start()


@server_app.command("check")
def server_check(config: Path = CONFIG) -> None:
    """Pre-flight check of the operator's side, before or while the server runs.

    One line per check, green, amber or red, with the fix: federation.yaml and
    its paths, the PKI (CA, SuperLink certificate signed by it, naming the host,
    not expiring within 30 days; every site's key; the bundle key), ports free
    (before start) or SuperLink and registry answering over TLS (while running),
    disk space. Exit code 0 all green, 1 any red, 2 amber only. Writes nothing.

    Example: fedehr server check --config federation.yaml
    """
    from fedehr.server.preflight import server_checks
    from fedehr.shared.preflight import exit_code, render

    checks = server_checks(config)
    for line in render(checks):
        console.print(line, highlight=False, soft_wrap=True)
    raise typer.Exit(exit_code(checks))


@server_app.command("stop")
def server_stop(config: Path = CONFIG) -> None:
    """Stop a server started from this federation.yaml (e.g. in another terminal)."""
    from fedehr.server.config import load_federation_config
    from fedehr.shared.processes import stop_from_pidfile

    cfg = load_federation_config(config)
    stopped = stop_from_pidfile(cfg.workdir / "server.pid")
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@server_app.command("register")
def server_register(name: str = typer.Argument(..., help="The site's name in the PKI."),
                    config: Path = CONFIG) -> None:
    """Allow one more hospital to join the running SuperLink.

    Example: fedehr server register hospital_d --config federation.yaml
    """
    from fedehr.server.config import load_federation_config

    cfg = load_federation_config(config)
    console.print(register_sites(cfg, _pki(cfg), [name]))


@run_app.command("start")
def run_start(config: Path = CONFIG,
              resume: bool = typer.Option(False, help="Continue after the last checkpointed "
                                                      "round of this workdir."),
              watch: bool = typer.Option(True, help="Follow the run until it ends.")) -> None:
    """Launch a federated run on the running server and show its progress.

    Example: fedehr run start --config federation.yaml
    """
    from fedehr.server import runs
    from fedehr.server.config import load_federation_config
    from fedehr.shared.processes import Supervisor

    cfg = load_federation_config(config)
    console.print("privacy budget per site, before the run starts:")
    for line in runs.budget_preview(cfg, resume=resume):
        console.print(f"  {line}", highlight=False, markup=False)
    run_id = runs.launch(cfg, config, resume=resume)
    shipped = json.loads(runs.run_file(cfg).read_text())
    console.print(f"run [bold]{run_id}[/] started{' (resuming)' if resume else ''}; bundle "
                  f"{shipped['bundle-hash']} "
                  f"{'signed' if shipped['signed'] else '[yellow]unsigned[/] (no bundle key)'}")
    if not watch:
        return
    supervisor = Supervisor()
    log = runs.follow_log(supervisor, cfg, run_id)
    try:
        result = runs.watch(cfg, run_id, console)
    except KeyboardInterrupt:
        runs.stop(cfg)
        console.print(f"stopped run {run_id}")
        raise
    finally:
        supervisor.stop_all()
    console.print(f"[bold green]finished[/] {result['rounds']} rounds; checkpoint: "
                  f"{result['checkpoint']}; server log: {log}")


@run_app.command("bundle-hash")
def run_bundle_hash(config: Path = CONFIG) -> None:
    """Print the FAB hash of the bundle `fedehr run start` ships, for sites that approve by hash.

    The bundle is configuration only, and Flower builds it reproducibly: the hash
    changes when the fedehr version, federation.yaml's path or the ClientApp named
    changes. Send it to the hospitals (site.yaml: approval.bundle_hashes).

    Example: fedehr run bundle-hash --config federation.yaml
    """
    from fedehr.server import runs
    from fedehr.server.bundle import bundle_hash
    from fedehr.server.config import load_federation_config

    cfg = load_federation_config(config)
    print(bundle_hash(runs.shipped_bundle(cfg, config)))


@run_app.command("status")
def run_status(config: Path = CONFIG) -> None:
    """Show the rounds, sites, losses and epsilon per site of the latest run."""
    from fedehr.server import runs
    from fedehr.server.config import load_federation_config
    from fedehr.server.status import read_status

    cfg = load_federation_config(config)
    status = read_status(cfg.status_path)
    if status is None:
        raise FedEHRError("no run status yet", where=str(cfg.status_path),
                          fix="start a run with `fedehr run start`")
    console.print(runs.status_table(status, cfg))


@run_app.command("stop")
def run_stop(config: Path = CONFIG) -> None:
    """Stop the latest run of this workdir (the server keeps running)."""
    from fedehr.server import runs
    from fedehr.server.config import load_federation_config

    console.print(f"stopped run {runs.stop(load_federation_config(config))}")
