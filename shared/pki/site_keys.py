"""Hospital (SuperNode) authentication keys in the form Flower reads.

Flower 1.42 authenticates SuperNodes with an ECDSA key on a NIST curve:
`flower-supernode --auth-supernode-private-key sites/NAME.key` loads the
OpenSSH private key, and `flwr supernode register sites/NAME.pub CONNECTION`
enrols the OpenSSH public key line ``ecdsa-sha2-nistp384 AAAA... NAME`` with a
SuperLink started with `--enable-supernode-auth`. Registration against a
running SuperLink is done elsewhere; this module only issues the key pair.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedehr.shared.atomic import write_bytes
from fedehr.shared.pki.layout import PKIError, PKIPaths, refuse_overwrite, require_ca, validate_name


def issue_site_key(dir: str | os.PathLike, name: str, *, force: bool = False) -> tuple[Path, Path]:
    """Write sites/NAME.key (OpenSSH private, 0600) and sites/NAME.pub; return both paths."""
    validate_name(name, "site name")
    paths = PKIPaths.of(dir)
    require_ca(paths)
    refuse_overwrite(paths.site_key(name), force=force)
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH)
    write_bytes(paths.site_key(name), private, mode=0o600)
    write_bytes(paths.site_pub(name), public + f" {name}\n".encode(), mode=0o644)
    return paths.site_key(name), paths.site_pub(name)


def site_public_key_path(dir: str | os.PathLike, name: str) -> Path:
    """sites/NAME.pub, the file `flwr supernode register` takes; PKIError if not issued."""
    path = PKIPaths.of(dir).site_pub(validate_name(name, "site name"))
    if not path.is_file():
        raise PKIError(f"no key issued for site '{name}'", where=str(path),
                       fix=f"run `fedehr pki site {name} --dir {PKIPaths.of(dir).root}`")
    return path


def register_hint(public_path: Path, connection: str = "CONNECTION") -> str:
    """The command that enrols this site with a running SuperLink."""
    return f"flwr supernode register {public_path} {connection}"


def ssh_fingerprint(public_path: str | os.PathLike) -> str:
    """OpenSSH-style fingerprint ('SHA256:base64') of a .pub file, as `ssh-keygen -l` prints."""
    blob = Path(public_path).read_text().split()[1]
    digest = hashlib.sha256(base64.b64decode(blob)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")
