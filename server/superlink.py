"""Starting the Flower SuperLink and talking to it with the `flwr` CLI.

The SuperLink serves Fleet, Control and Runtime APIs on one HTTPS port
(flwr 1.42). It runs with TLS from the consortium PKI and SuperNode
authentication, so only hospitals whose key was registered can join.
Connections for `flwr` live in FLWR_HOME/config.toml, which fedehr writes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fedehr.shared.atomic import write_text
from fedehr.shared.pki import PKIPaths
from fedehr.shared.processes import (
    ProcessError,
    Supervisor,
    ensure_port_free,
    flower_env,
    wait_for_port,
)

CONNECTION = "fedehr"


def bin_path(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def write_connection(flwr_home: Path, address: str, ca: Path | None) -> None:
    """Write the `flwr` CLI connection to this SuperLink (TLS unless no CA is given)."""
    lines = ["[superlink]", f'default = "{CONNECTION}"', "", f"[superlink.{CONNECTION}]",
             f'address = "{address}"']
    lines.append(f'root-certificates = "{ca}"' if ca else "insecure = true")
    flwr_home.mkdir(parents=True, exist_ok=True)
    write_text(flwr_home / "config.toml", "\n".join(lines) + "\n")


def superlink_args(host: str, port: int, pki: PKIPaths | None, database: Path | None) -> list[str]:
    args = [bin_path("flower-superlink"), "--host", host, "--port", str(port),
            "--disable-runtime-dependency-installation"]
    if pki is None:
        args.append("--insecure")
    else:
        args += ["--ssl-ca-certfile", str(pki.ca_cert), "--ssl-certfile", str(pki.server_cert),
                 "--ssl-keyfile", str(pki.server_key), "--enable-supernode-auth"]
    if database is not None:
        args += ["--database", str(database)]
    return args


WILDCARDS = ("0.0.0.0", "::", "")


def refuse_unusable_certificate(host: str, pki: PKIPaths) -> None:
    """ProcessError, naming the cause and the fix, for a SuperLink certificate that every
    TLS handshake would refuse: expired, not yet valid, or not naming `host`.

    Flower's SuperLink starts with such a certificate and logs nothing when a
    hospital refuses it (the handshake fails on the hospital's side; the server sees a
    closed connection), and its own SuperExec, dialing `host`, dies with a traceback.
    So the operator hears it here, before anything starts.
    """
    from datetime import UTC, datetime

    from cryptography import x509

    from fedehr.server.preflight import certificate_names, names_host

    fix = f"fedehr pki server --host {host} --dir {pki.root} --force"
    try:
        cert = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    except (OSError, ValueError) as exc:
        raise ProcessError(f"cannot read the SuperLink certificate ({exc})",
                           where=str(pki.server_cert), fix=fix) from None
    now = datetime.now(UTC)
    if cert.not_valid_after_utc <= now:
        raise ProcessError(f"the SuperLink certificate expired on "
                           f"{cert.not_valid_after_utc:%Y-%m-%d}: every hospital would refuse "
                           "the TLS handshake", where=str(pki.server_cert), fix=fix)
    if cert.not_valid_before_utc > now:
        raise ProcessError(f"the SuperLink certificate is valid only from "
                           f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (this host's "
                           "clock, or the issuer's, is wrong)", where=str(pki.server_cert),
                           fix=f"check the clocks, or {fix}")
    if host in WILDCARDS:
        return  # the sites' address is not known here; `fedehr site check` checks it
    if not names_host(cert, host):
        names = ", ".join(certificate_names(cert)) or "nothing"
        raise ProcessError(f"the SuperLink certificate does not name {host} (superlink.host; "
                           f"it names {names}): hospitals dialing {host} would refuse the TLS "
                           "handshake", where=str(pki.server_cert), fix=fix)


def start_superlink(supervisor: Supervisor, *, host: str, port: int, pki: PKIPaths | None,
                    flwr_home: Path, log: Path, database: Path | None = None) -> str:
    """Start the SuperLink, wait until it listens, and write the `flwr` connection."""
    address = f"{host}:{port}"
    if pki is not None:
        refuse_unusable_certificate(host, pki)
    ensure_port_free(host, port, where="superlink.port")  # not a wait for the wrong listener
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
    log_from = log.stat().st_size if log.exists() else 0  # earlier runs' lines are history
    proc = supervisor.start("superlink", superlink_args(host, port, pki, database), log=log,
                            env=flower_env(flwr_home))
    # A wildcard bind is dialled on loopback, a name the SuperLink certificate always has.
    dial = "127.0.0.1" if host in WILDCARDS else host
    wait_for_port(dial, port, timeout=60, proc=proc, log=log, log_from=log_from)
    write_connection(flwr_home, f"{dial}:{port}", pki.ca_cert if pki else None)
    return address


def flwr_cli(flwr_home: Path, *args: str, timeout: float = 60) -> dict | list:
    """Run a `flwr` CLI command against our connection and parse its JSON output."""
    cmd = [bin_path("flwr"), *args, "--format", "json"]
    try:
        proc = subprocess.run(cmd, env=flower_env(flwr_home), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ProcessError(f"`flwr {' '.join(args)}` did not answer within {timeout:.0f} s",
                           fix="the SuperLink or this host may be overloaded or down: check "
                               "`fedehr run status` and the host's load") from None
    text = proc.stdout
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    if start < 0:
        raise ProcessError(f"`flwr {' '.join(args)}` gave no JSON (exit {proc.returncode}): "
                           f"{(proc.stderr or text).strip()[-300:]}",
                           fix="check that the SuperLink is running (`fedehr server start`)")
    data = json.loads(text[start:])
    if isinstance(data, dict) and data.get("success") is False:
        raise ProcessError(f"`flwr {' '.join(args)}` failed: "
                           f"{data.get('error-message', data)}")
    return data


def register_site(flwr_home: Path, public_key: Path) -> int:
    """Register a hospital's SuperNode public key; returns its node id."""
    data = flwr_cli(flwr_home, "supernode", "register", str(public_key), CONNECTION)
    return int(data["node-id"])


def list_nodes(flwr_home: Path) -> list[dict]:
    data = flwr_cli(flwr_home, "supernode", "ls", CONNECTION)
    return data.get("nodes", []) if isinstance(data, dict) else data
