"""Pre-flight checks: one line per thing that would make a first run fail or mislead.

Each check is green (fine), amber (works, but look at it) or red (will fail),
and a line that is not green names its fix. `fedehr site check` and `fedehr
server check` print them; the exit code is 0 when all are green, 1 when any is
red, 2 when the worst is amber (the convention of monitoring plugins: OK,
CRITICAL, WARNING, with WARNING and CRITICAL swapped so that `if` in a shell
treats amber as failure too). The site's and the server's own lists are in
fedehr.client.preflight and fedehr.server.preflight; the probes both sides
need (a file's certificate, a TLS handshake, a port, free disk) are here.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

Level = Literal["green", "amber", "red"]
EXPIRY_WARNING = timedelta(days=30)
TLS_TIMEOUT = 3.0  # seconds for the TCP connect and the TLS handshake, each


@dataclass(frozen=True)
class Check:
    """One line of a pre-flight report."""

    name: str
    level: Level
    message: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.level:5}  {self.name}: {self.message}" + \
            (f"; fix: {self.fix}" if self.fix and self.level != "green" else "")


def exit_code(checks: list[Check]) -> int:
    """0 all green, 1 any red, 2 amber only."""
    levels = {c.level for c in checks}
    return 1 if "red" in levels else 2 if "amber" in levels else 0


def render(checks: list[Check]) -> list[str]:
    """Rich-markup lines, coloured by level (amber as yellow)."""
    from rich.markup import escape

    colour = {"green": "green", "amber": "yellow", "red": "red"}
    return [f"[{colour[c.level]}]{escape(c.line())}[/]" for c in checks]


def certificate_check(name: str, path: Path | None, *, fix: str,
                      now: datetime | None = None):
    """(Check, certificate or None): present, a PEM certificate, not expired or expiring
    within EXPIRY_WARNING."""
    from cryptography import x509

    if path is None or not path.is_file():
        return Check(name, "red", f"{path} not found", fix), None
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError:
        return Check(name, "red", f"{path} is not a PEM certificate", fix), None
    return expiry_check(name, cert.not_valid_after_utc, str(path), fix, now), cert


def expiry_check(name: str, not_after: datetime, what: str, fix: str,
                 now: datetime | None = None) -> Check:
    now = now or datetime.now(UTC)
    day = not_after.strftime("%Y-%m-%d")
    if not_after <= now:
        return Check(name, "red", f"{what} expired on {day}", fix)
    if not_after - now < EXPIRY_WARNING:
        return Check(name, "amber", f"{what} expires on {day} (within "
                     f"{EXPIRY_WARNING.days} days)", fix)
    return Check(name, "green", f"{what} valid until {day}")


def tls_handshake(name: str, host: str, port: int, ca: Path, *,
                  timeout: float = TLS_TIMEOUT, unreachable: Level = "red") -> Check:
    """Connect to host:port and complete a TLS handshake that trusts only `ca`.

    Says whether the address answers at all, whether its certificate chains to
    the consortium CA (the CA matches) and names this host, and when it expires.
    `unreachable` is the level of a refused or silent port (amber where the
    caller retries on its own, as the site daemon does).
    """
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["h2"])  # gRPC's; without it a gRPC server may hang up
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            peer = tls.getpeercert()
    except ssl.SSLCertVerificationError as exc:
        return Check(name, "red", f"{host}:{port} answered with a certificate this CA does "
                     f"not accept ({exc.verify_message})",
                     f"use the consortium's ca.pem, and a server certificate issued for "
                     f"this name (`fedehr pki server --host {host}`)")
    except (ssl.SSLError, OSError) as exc:
        reason = exc.strerror or exc.__class__.__name__ if isinstance(exc, OSError) else exc
        return Check(name, unreachable, f"{host}:{port} not reachable over TLS ({reason})",
                     "check the address and that the server runs; open the port in the "
                     "firewall between this host and it")
    not_after = datetime.fromtimestamp(ssl.cert_time_to_seconds(peer["notAfter"]), UTC)
    found = expiry_check(name, not_after, f"{host}:{port} TLS certificate (CA matches)",
                         "ask the operator to renew it (`fedehr pki server --force`)")
    return found


def port_free(name: str, host: str, port: int, fix: str) -> Check:
    """Can this host bind host:port (the address a daemon will listen on)?"""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family) as sock:
            sock.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return Check(name, "red", f"{host}:{port} is already in use", fix)
        return Check(name, "red", f"cannot listen on {host}:{port} ({exc.strerror})", fix)
    return Check(name, "green", f"{host}:{port} is free")


def listening(host: str, port: int, timeout: float = 1.0) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def disk_check(name: str, folder: Path, *, red_below: int, amber_below: int) -> Check:
    """Free space where `folder` is (or will be created)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    text = f"{free / 2**30:.1f} GiB free for {folder}"
    fix = f"free space on {existing} or move the folder to a larger disk"
    if free < red_below:
        return Check(name, "red", f"{text} (needs {red_below / 2**30:.1f} GiB)", fix)
    if free < amber_below:
        return Check(name, "amber", f"{text} (below {amber_below / 2**30:.1f} GiB)", fix)
    return Check(name, "green", text)
