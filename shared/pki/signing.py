"""The consortium's Ed25519 signing key: it signs global checkpoints and app bundles.

signing/consortium.key is PKCS#8 PEM (0600), signing/consortium.pub the PEM
public key researchers and sites verify with, and signing/consortium.ssh.pub
the same public key as an OpenSSH line (``ssh-ed25519 AAAA... fedehr-consortium``),
the form Flower's `flower-supernode --trusted-entities` YAML expects for
signed app bundles. Signing and verifying themselves live with the checkpoint
format; this module only creates and loads the key.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedehr.shared.atomic import write_bytes
from fedehr.shared.pki.layout import PKIError, PKIPaths, refuse_overwrite

SSH_COMMENT = "fedehr-consortium"


def create_signing_key(dir: str | os.PathLike, *, force: bool = False) -> PKIPaths:
    paths = PKIPaths.of(dir)
    refuse_overwrite(paths.signing_key, force=force)
    key = Ed25519PrivateKey.generate()
    pub = key.public_key()
    write_bytes(paths.signing_key,
                key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()), mode=0o600)
    write_bytes(paths.signing_pub,
                pub.public_bytes(serialization.Encoding.PEM,
                                 serialization.PublicFormat.SubjectPublicKeyInfo), mode=0o644)
    ssh = pub.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    write_bytes(paths.signing_ssh_pub, ssh + f" {SSH_COMMENT}\n".encode(), mode=0o644)
    return paths


def consortium_signing_key(dir: str | os.PathLike) -> Ed25519PrivateKey:
    """The consortium's private signing key (operator side only)."""
    path = PKIPaths.of(dir).signing_key
    if not path.is_file():
        raise PKIError("no consortium signing key", where=str(path),
                       fix=f"run `fedehr pki init --dir {PKIPaths.of(dir).root}` first")
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise PKIError("the consortium signing key is not Ed25519", where=str(path))
    return key


def consortium_public_key(dir: str | os.PathLike) -> Ed25519PublicKey:
    """The consortium's public verification key (what sites and researchers hold)."""
    path = PKIPaths.of(dir).signing_pub
    if not path.is_file():
        raise PKIError("no consortium public key", where=str(path),
                       fix="copy consortium.pub from the operator's pki/signing/ folder")
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise PKIError("the consortium public key is not Ed25519", where=str(path))
    return key
