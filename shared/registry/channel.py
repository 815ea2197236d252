"""Dialling the registry: a TLS channel with the caller's client certificate.

The registry authenticates every caller by certificate (mutual TLS, the
consortium CA on both sides). A certificate from another CA, or none, fails
the TLS handshake, which gRPC reports only as UNAVAILABLE; `RegistryError.of`
turns that and every refusal into one line that says what to check.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import grpc

from fedehr.shared.errors import FedEHRError
from fedehr.shared.registry import registry_pb2_grpc

DEFAULT_PORT = 9095


class RegistryError(FedEHRError):
    """The registry refused a call, could not be reached, or sent something wrong."""

    exit_code = 5

    @classmethod
    def of(cls, exc: grpc.RpcError, target: str) -> RegistryError:
        code = exc.code() if hasattr(exc, "code") else None
        details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
        if code == grpc.StatusCode.UNAVAILABLE:
            return cls(f"cannot reach the registry or the TLS handshake failed ({details})",
                       where=target,
                       fix="check the address, that --pki-ca is the consortium's ca.pem, and "
                       "that --cert/--key is a certificate the consortium CA issued to you")
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return cls(f"the registry does not accept your certificate: {details}",
                       where=target, fix="ask the consortium operator for a new certificate")
        if code == grpc.StatusCode.PERMISSION_DENIED:
            return cls(f"not allowed: {details}", where=target,
                       fix="use a certificate with the right role (researcher or operator)")
        if code == grpc.StatusCode.NOT_FOUND:
            return cls(details, where=target, fix="list the rounds with `fedehr model list`")
        name = code.name if code is not None else "error"
        return cls(f"the registry answered {name}: {details}", where=target)


def _read(path: str | os.PathLike, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise RegistryError(f"cannot read the {what} ({exc.strerror})", where=str(path),
                            fix=f"give the path of your {what}") from None


def _check_dates(pem: bytes, what: str, path: str | os.PathLike) -> None:
    """Say here which certificate has expired (or is not valid yet) and when: the server
    would only end the TLS handshake, which reads as "cannot reach the registry"."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise RegistryError(f"the {what} is not a PEM certificate", where=str(path),
                            fix=f"give the path of your {what} (.pem)") from None
    now = datetime.now(UTC)
    for certificate in certificates:
        names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        who = f" of {names[0].value}" if names else ""
        if certificate.not_valid_after_utc < now:
            raise RegistryError(f"the {what}{who} expired on "
                                f"{certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC",
                                where=str(path), fix="ask the consortium operator for a new "
                                "one (`fedehr pki researcher NAME`)")
        if certificate.not_valid_before_utc > now:
            raise RegistryError(f"the {what}{who} is not valid before "
                                f"{certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
                                where=str(path), fix="check this computer's clock")


def open_channel(target: str, ca: str | os.PathLike, cert: str | os.PathLike | None,
                 key: str | os.PathLike | None) -> grpc.Channel:
    """A secure channel to `target` (host:port) presenting `cert`/`key` (PEM)."""
    if ":" not in target:
        target = f"{target}:{DEFAULT_PORT}"
    root = _read(ca, "consortium CA certificate")
    _check_dates(root, "consortium CA certificate", ca)
    chain = _read(cert, "client certificate") if cert else None
    if chain is not None:
        _check_dates(chain, "client certificate", cert)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=root,
        private_key=_read(key, "private key") if key else None,
        certificate_chain=chain,
    )
    return grpc.secure_channel(target, credentials, options=[
        ("grpc.max_receive_message_length", 8 << 20),
        ("grpc.max_send_message_length", 8 << 20),
    ])


def stub(channel: grpc.Channel) -> registry_pb2_grpc.RegistryStub:
    return registry_pb2_grpc.RegistryStub(channel)
