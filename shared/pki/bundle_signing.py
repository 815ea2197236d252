"""The consortium's bundle-signing key: its signature over a Flower app bundle is approval.

A hospital approves the code-free bundles the operator ships either one by one
(their FAB hash in site.yaml) or by trusting this key: `fedehr run start`
signs the FAB hash of the bundle it ships, and a site whose site.yaml names
signing/bundle.pub runs a bundle only when that signature verifies.

A key of its own, apart from signing/consortium.key (checkpoints): the two
sign different things for different audiences, and either can be replaced
without touching the other. Flower's own `--trusted-entities` needs a licence
from Flower's hosted platform, so an offline consortium cannot use it.

What is signed is ``fedehr-bundle:v1:<FAB sha256 hex>`` (a prefix, so that a
signature made for something else can never pass for a bundle approval).
"""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedehr.shared.atomic import write_bytes
from fedehr.shared.pki.layout import PKIError, PKIPaths, refuse_overwrite

DOMAIN = b"fedehr-bundle:v1:"
FAB_HASH = re.compile(r"^[0-9a-f]{64}$")


def bundle_key_paths(dir: str | os.PathLike) -> tuple[Path, Path]:
    """(private, public) key paths of the bundle-signing key in a PKI folder."""
    signing = PKIPaths.of(dir).signing_dir
    return signing / "bundle.key", signing / "bundle.pub"


def create_bundle_key(dir: str | os.PathLike, *, force: bool = False) -> tuple[Path, Path]:
    private, public = bundle_key_paths(dir)
    refuse_overwrite(private, public, force=force)
    key = Ed25519PrivateKey.generate()
    write_bytes(private, key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()), mode=0o600)
    write_bytes(public, key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), mode=0o644)
    return private, public


def load_bundle_private_key(dir: str | os.PathLike) -> Ed25519PrivateKey | None:
    """The operator's bundle-signing key, or None when the PKI has none (nothing signed)."""
    private, _ = bundle_key_paths(dir)
    if not private.is_file():
        return None
    key = serialization.load_pem_private_key(private.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise PKIError("the bundle-signing key is not Ed25519", where=str(private),
                       fix=f"recreate it: fedehr pki bundle-key --dir {dir} --force")
    return key


def load_bundle_public_key(path: str | os.PathLike) -> Ed25519PublicKey:
    path = Path(path)
    if not path.is_file():
        raise PKIError("bundle-signing public key not found", where=str(path),
                       fix="copy bundle.pub from the operator's pki/signing/ folder")
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except ValueError:
        key = None
    if not isinstance(key, Ed25519PublicKey):
        raise PKIError("not an Ed25519 public key in PEM form", where=str(path),
                       fix="use the bundle.pub written by `fedehr pki bundle-key`")
    return key


def sign_fab_hash(key: Ed25519PrivateKey, fab_hash: str) -> str:
    """Base64 signature over the bundle's FAB hash (sha256 hex)."""
    _check_hash(fab_hash)
    return base64.b64encode(key.sign(DOMAIN + fab_hash.encode())).decode()


def verify_fab_signature(key: Ed25519PublicKey, fab_hash: str, signature: str) -> bool:
    _check_hash(fab_hash)
    try:
        key.verify(base64.b64decode(signature, validate=True), DOMAIN + fab_hash.encode())
    except (InvalidSignature, ValueError):
        return False
    return True


def _check_hash(fab_hash: str) -> None:
    if not FAB_HASH.match(fab_hash):
        raise PKIError(f"not a FAB hash: {fab_hash!r}", where="bundle hash",
                       fix="a FAB hash is 64 lowercase hex digits (sha256)")
