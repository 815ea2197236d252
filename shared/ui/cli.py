"""`fedehr ui`: serve the page on this machine.

Loopback by default. Any other --host serves patient data to the network, so it
needs TLS (--tls-cert, --tls-key) and a login (--token-file: a secret the user
types once; the page then keeps a session cookie).
"""

from __future__ import annotations

import getpass
import ipaddress
from pathlib import Path

import typer

from fedehr.shared.errors import ConfigError

EXAMPLE = """Example:

  fedehr ui --checkpoint ckpt --data hospital_a --audit-log site-state/hospital_a/audit.jsonl

then open http://127.0.0.1:8765 in a browser on this machine.
"""


def ui(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Checkpoint folder."),
    data: Path = typer.Option(..., "--data", help="MEDS dataset of this hospital."),
    audit_log: Path = typer.Option(Path("audit.jsonl"), "--audit-log",
                                   help="The site's audit log; every question is appended."),
    port: int = typer.Option(8765, "--port", min=1, max=65535, help="TCP port."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback unless "
                             "TLS and a login are configured)."),
    tls_cert: Path = typer.Option(None, "--tls-cert", help="TLS certificate (PEM)."),
    tls_key: Path = typer.Option(None, "--tls-key", help="TLS private key (PEM)."),
    token_file: Path = typer.Option(None, "--token-file", help="File holding the access "
                                    "token users sign in with."),
    trusted_key: Path = typer.Option(None, "--trusted-key", help="The consortium's public "
                                     "key: the checkpoint must be signed by it."),
    samples: int = typer.Option(32, "--samples", min=1, help="Default continuations."),
    report: Path = typer.Option(None, "--report", help="The --out folder of `fedehr model "
                                "evaluate`: its scores and plots on the Model page."),
    user: str = typer.Option(None, "--user", help="Who asks, for the audit log (default: "
                             "the login name of this process)."),
) -> None:
    """Serve the web page: patients, questions, cohorts, the model card.

    Example: fedehr ui --checkpoint ckpt --data hospital_a --audit-log site/audit.jsonl
    """
    import uvicorn

    from fedehr.shared.ui.app import create_app
    from fedehr.shared.ui.workspace import Settings

    token = check_exposure(host, tls_cert, tls_key, token_file)
    if report is not None:
        from fedehr.shared.ui.evaluation import read_evaluation

        read_evaluation(report, checkpoint)  # a wrong folder is refused now, not on the page
    settings = Settings(checkpoint=checkpoint, data=data, audit_log=audit_log,
                        trusted_key=trusted_key, user=user or getpass.getuser(), token=token,
                        secure_cookie=tls_cert is not None, samples=samples, report=report)
    app = create_app(settings)
    scheme = "https" if tls_cert else "http"
    typer.echo(f"fedehr ui on {scheme}://{host}:{port} (Ctrl-C stops it)")
    uvicorn.run(app, host=host, port=port, log_level="warning",
                ssl_certfile=str(tls_cert) if tls_cert else None,
                ssl_keyfile=str(tls_key) if tls_key else None)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, tls_cert: Path | None, tls_key: Path | None,
                   token_file: Path | None) -> str | None:
    """The login token (or None); refuses a network address without TLS and a login."""
    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("TLS needs both --tls-cert and --tls-key", where="ui",
                          fix="give both files, or neither")
    if not is_loopback(host) and (tls_cert is None or token_file is None):
        raise ConfigError(f"--host {host} would serve patient data to the network without "
                          "TLS and a login", where="ui",
                          fix="keep the default 127.0.0.1, or give --tls-cert, --tls-key and "
                          "--token-file")
    for path in (tls_cert, tls_key):
        if path is not None and not path.is_file():
            raise ConfigError("no such file", where=str(path), fix="check the TLS file path")
    if token_file is None:
        return None
    try:
        token = token_file.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the token file ({exc.strerror})", where=str(token_file),
                          fix="give a readable file holding the access token") from None
    if len(token) < 12:
        raise ConfigError("the access token is shorter than 12 characters",
                          where=str(token_file), fix="write a long random token, e.g. "
                          "`python -c 'import secrets; print(secrets.token_urlsafe())'`")
    return token
