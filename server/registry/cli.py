"""`fedehr registry ...`: run the checkpoint registry; publish and withdraw rounds.

`start` serves a federation's workdir in the foreground until Ctrl-C or
`fedehr registry stop` (its PID file is WORKDIR/registry.pid, like the other
daemons' in shared/processes.py).
`publish` and `revoke` are operator calls to a running registry, made with an
operator certificate (`fedehr pki researcher NAME --role operator`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from fedehr.shared.registry.client import Credentials, publish, withdraw

app = typer.Typer(help="The checkpoint registry researchers pull signed checkpoints from.",
                  no_args_is_help=True)
console = Console()

START_EXAMPLE = """Example:

  fedehr registry start --workdir runs/fed1 --pki ./pki --host 0.0.0.0 --port 9095

The server certificate is pki/superlink.pem (issue it with `fedehr pki server --host
registry.example.org`) unless --cert/--key name another one signed by the consortium CA.
"""


@app.command(help=f"Serve WORKDIR/checkpoints to researchers (foreground; Ctrl-C stops).\n\n"
                  f"{START_EXAMPLE}")
def start(
    workdir: Path = typer.Option(..., "--workdir", help="The federation's workdir "
                                 "(holds checkpoints/round-NNNN)."),
    pki: Path = typer.Option(Path("pki"), "--pki", help="The consortium's PKI folder (ca.pem, "
                             "revoked.json, signing/consortium.pub, superlink.pem/.key)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(9095, "--port", min=0, max=65535, help="Port to listen on."),
    cert: Path = typer.Option(None, "--cert", help="Server certificate (default: "
                              "PKI/superlink.pem)."),
    key: Path = typer.Option(None, "--key", help="Server key (default: PKI/superlink.key)."),
) -> None:
    from fedehr.server.registry.service import RegistryService, audit_pulls, build_server
    from fedehr.shared.processes import Supervisor, hold_daemon_lock, wait_for_stop_signal

    hold_daemon_lock(pidfile(workdir), "the registry")  # a second one is refused at once
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    service = RegistryService(workdir, pki, on_pull=audit_pulls(workdir / "audit.jsonl"))
    server, bound = build_server(service, host=host, port=port, cert=cert, key=key)
    server.start()
    console.print(f"[green]registry[/] serving {workdir / 'checkpoints'} on {host}:{bound} "
                  "(mutual TLS; Ctrl-C or `fedehr registry stop` stops)")
    supervisor = Supervisor(pidfile=pidfile(workdir))
    supervisor.record()
    try:
        wait_for_stop_signal()
    finally:
        server.stop(grace=2).wait()
        supervisor.stop_all()
        console.print("registry stopped")


def pidfile(workdir: Path) -> Path:
    return workdir / "registry.pid"


@app.command("stop")
def stop(workdir: Path = typer.Option(..., "--workdir", help="The workdir the registry "
                                      "serves (as given to `fedehr registry start`).")) -> None:
    """Stop a registry started with `fedehr registry start` (e.g. in another terminal).

    Example: fedehr registry stop --workdir runs/fed1
    """
    from fedehr.shared.processes import stop_from_pidfile

    stopped = stop_from_pidfile(pidfile(workdir))
    console.print(f"stopped: {'the registry' if stopped else 'nothing was running'}")


def _creds(registry: str, ca: Path, cert: Path, key: Path) -> Credentials:
    return Credentials(registry, ca, cert, key)


REGISTRY = typer.Option("127.0.0.1:9095", "--registry", help="host:port of the registry.")
CA = typer.Option(Path("pki/ca.pem"), "--pki-ca", help="The consortium CA certificate.")
CERT = typer.Option(..., "--cert", help="Your operator certificate (PEM).")
KEY = typer.Option(..., "--key", help="Its private key.")


@app.command("publish")
def publish_cmd(
    folder: Path = typer.Argument(..., help="A signed checkpoint folder."),
    round: int = typer.Option(0, "--round", min=0, help="Round number to publish as (0: the "
                              "model card's rounds)."),
    registry: str = REGISTRY, ca: Path = CA, cert: Path = CERT, key: Path = KEY,
) -> None:
    """Upload a checkpoint signed with the consortium key as a new round.

    Example: fedehr registry publish ckpt/ --round 12 --cert pki/researchers/olga.pem
    --key pki/researchers/olga.key
    """
    rnd = publish(_creds(registry, ca, cert, key), folder, round)
    console.print(f"[green]published[/] {escape(str(folder))} as round {rnd}")


@app.command("revoke")
def revoke_cmd(
    round: int = typer.Argument(..., min=0, help="The round to withdraw."),
    reason: str = typer.Option("", "--reason", help="Why (kept in withdrawn.json)."),
    registry: str = REGISTRY, ca: Path = CA, cert: Path = CERT, key: Path = KEY,
) -> None:
    """Withdraw a round: researchers no longer see or pull it (files are kept).

    Example: fedehr registry revoke 7 --reason "mislabeled site export" --cert ... --key ...
    """
    already = withdraw(_creds(registry, ca, cert, key), round, reason)
    console.print(f"round {round} {'was already' if already else 'is now'} withdrawn")
