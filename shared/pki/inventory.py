"""What a PKI folder holds: one row per issued credential, for `fedehr pki list`."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

from cryptography.x509.oid import NameOID

from fedehr.shared.pki.certificates import fingerprint, load_cert, role_of
from fedehr.shared.pki.layout import PKIPaths
from fedehr.shared.pki.revocation import load_revocations
from fedehr.shared.pki.site_keys import ssh_fingerprint


@dataclass(frozen=True)
class Credential:
    kind: str  # ca, server, signing, site, researcher, operator
    name: str
    expires: dt.datetime | None  # None: a bare key, no expiry
    fingerprint: str
    revoked: bool


def list_credentials(dir: str | os.PathLike) -> list[Credential]:
    paths = PKIPaths.of(dir)
    revoked = load_revocations(dir)
    serials = {r.serial for r in revoked if r.serial}
    prints = {r.fingerprint for r in revoked}
    rows: list[Credential] = []
    for kind, path in (("ca", paths.ca_cert), ("server", paths.server_cert)):
        if path.is_file():
            cert = load_cert(path)
            rows.append(Credential(kind, _common_name(cert), cert.not_valid_after_utc,
                                   fingerprint(cert), False))
    if paths.signing_ssh_pub.is_file():
        rows.append(Credential("signing", "consortium", None,
                               ssh_fingerprint(paths.signing_ssh_pub), False))
    for pub in sorted(paths.sites_dir.glob("*.pub")) if paths.sites_dir.is_dir() else []:
        fp = ssh_fingerprint(pub)
        rows.append(Credential("site", pub.stem, None, fp, fp in prints))
    pems = sorted(paths.researchers_dir.glob("*.pem")) if paths.researchers_dir.is_dir() else []
    for pem in pems:
        cert = load_cert(pem)
        rows.append(Credential(role_of(cert) or "researcher", pem.stem, cert.not_valid_after_utc,
                               fingerprint(cert), format(cert.serial_number, "x") in serials))
    return rows


def _common_name(cert) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else cert.subject.rfc4514_string()
