"""X.509 issuance: the consortium CA, the SuperLink's TLS certificate, researcher certificates.

Keys are EC P-384 (ECDSA with SHA-384 signatures). The CA is self-signed and
valid 10 years; it signs the SuperLink server certificate (serverAuth, SANs for
every host name and address the SuperNodes and `flwr` may dial, always with
localhost, 127.0.0.1 and ::1) and client certificates for researchers and
operators (clientAuth, role in the subject's OU) for the checkpoint registry.
Extensions follow what strict verifiers (OpenSSL's X509_STRICT, cryptography's
verifier) require: key usage, basic constraints, subject/authority key ids.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedehr.shared.atomic import write_bytes
from fedehr.shared.pki.layout import (
    PKIError,
    PKIPaths,
    refuse_overwrite,
    require_ca,
    validate_name,
    validate_role,
)

CA_DAYS = 3650
SERVER_DAYS = 825
CLIENT_DAYS = 365
ALWAYS_HOSTS = ("localhost", "127.0.0.1", "::1")
_CLOCK_SKEW = dt.timedelta(minutes=5)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def write_private_pem(path: Path, key) -> None:
    """Write `key` as unencrypted PKCS#8 PEM, mode 0600, atomically."""
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    write_bytes(path, data, mode=0o600)


def write_cert(path: Path, cert: x509.Certificate) -> None:
    write_bytes(path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)


def load_cert(path: str | os.PathLike) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except FileNotFoundError:
        raise PKIError("certificate not found", where=str(path)) from None
    except ValueError as exc:
        raise PKIError(f"not a PEM certificate ({exc})", where=str(path)) from None


def create_ca(dir: str | os.PathLike, name: str = "Consortium CA", *,
              force: bool = False) -> tuple[Path, Path]:
    """Create the self-signed consortium CA (ca.pem, ca.key); return their paths."""
    paths = PKIPaths.of(dir)
    refuse_overwrite(paths.ca_key, paths.ca_cert, force=force)
    key = new_key()
    subject = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, name),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
    ])
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                       critical=False)
        .sign(key, hashes.SHA384())
    )
    write_private_pem(paths.ca_key, key)
    write_cert(paths.ca_cert, cert)
    return paths.ca_cert, paths.ca_key


def load_ca(dir: str | os.PathLike) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA certificate and key, or a PKIError telling to run `fedehr pki init`."""
    paths = PKIPaths.of(dir)
    require_ca(paths)
    cert = load_cert(paths.ca_cert)
    key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
    return cert, key


def issue_server_cert(dir: str | os.PathLike, hosts: list[str] | tuple[str, ...] = (), *,
                      force: bool = False, days: int = SERVER_DAYS,
                      valid_from: dt.datetime | None = None) -> tuple[Path, Path]:
    """Issue superlink.pem/superlink.key for `hosts` (plus localhost, 127.0.0.1, ::1),
    valid `days` days from `valid_from` (default now; an earlier start rehearses an
    expired certificate: its last day is then in the past)."""
    if days < 1:
        raise PKIError(f"--days {days}: a certificate must be valid at least 1 day",
                       where="--days", fix=f"give 1 or more (default {SERVER_DAYS})")
    paths = PKIPaths.of(dir)
    ca_cert, ca_key = load_ca(dir)
    refuse_overwrite(paths.server_key, force=force)
    names = _unique([h.strip() for h in hosts] + list(ALWAYS_HOSTS))
    key = new_key()
    cn = hosts[0].strip() if hosts else "superlink"
    cert = _sign_leaf(
        ca_cert, ca_key, key,
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), *_org(ca_cert)]),
        days=days, eku=ExtendedKeyUsageOID.SERVER_AUTH,
        san=x509.SubjectAlternativeName([_general_name(h) for h in names]), now=valid_from,
    )
    write_private_pem(paths.server_key, key)
    write_cert(paths.server_cert, cert)
    return paths.server_cert, paths.server_key


def issue_client_cert(dir: str | os.PathLike, name: str, role: str = "researcher", *,
                      force: bool = False) -> tuple[Path, Path]:
    """Issue researchers/NAME.pem/.key: clientAuth, subject CN=NAME, OU=ROLE."""
    validate_name(name, "researcher name")
    validate_role(role)
    paths = PKIPaths.of(dir)
    ca_cert, ca_key = load_ca(dir)
    refuse_overwrite(paths.researcher_key(name), force=force)
    key = new_key()
    subject = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, name),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
        *_org(ca_cert),
    ])
    cert = _sign_leaf(ca_cert, ca_key, key, subject, days=CLIENT_DAYS,
                      eku=ExtendedKeyUsageOID.CLIENT_AUTH, san=None)
    write_private_pem(paths.researcher_key(name), key)
    write_cert(paths.researcher_cert(name), cert)
    return paths.researcher_cert(name), paths.researcher_key(name)


def role_of(cert: x509.Certificate) -> str | None:
    """The role (OU) in a client certificate's subject, if any."""
    attrs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    return str(attrs[0].value) if attrs else None


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, as 'SHA256:' + hex."""
    return "SHA256:" + cert.fingerprint(hashes.SHA256()).hex()


def _sign_leaf(ca_cert, ca_key, key, subject: x509.Name, *, days: int, eku,
               san: x509.SubjectAlternativeName | None,
               now: dt.datetime | None = None) -> x509.Certificate:
    now = now or _now()
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),
                       critical=False)
    )
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    return builder.sign(ca_key, hashes.SHA384())


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=not cert_sign, key_cert_sign=cert_sign,
        crl_sign=cert_sign, encipher_only=False, decipher_only=False,
    )


def _org(ca_cert: x509.Certificate) -> list[x509.NameAttribute]:
    return list(ca_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))


def _general_name(host: str) -> x509.GeneralName:
    if not host or any(c.isspace() for c in host) or "/" in host:
        raise PKIError(f"invalid host '{host}'", where="--host",
                       fix="give a DNS name (superlink.example.org) or an IP address")
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host.lower())


def _unique(items: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item.lower(), None)
    return list(seen)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
