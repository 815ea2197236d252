"""Ed25519 signatures over a checkpoint: what was signed, and the key helpers.

A checkpoint's signature (``signature.ed25519``, base64 of the 64-byte Ed25519
signature) is detached and covers a canonical message that names every file
of the checkpoint with its SHA-256::

    fedehr-checkpoint-signature v1
    model.safetensors <sha256 hex>
    model_card.json <sha256 hex>
    vocab.json <sha256 hex>

so changing any byte of the weights, the vocabulary or the card (which itself
records the weight and vocabulary hashes) breaks it. Keys are PKCS#8 PEM
(private, 0600) and SubjectPublicKeyInfo PEM (public), the forms `fedehr pki`
writes for the consortium key, so a consortium key signs checkpoints directly.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedehr.shared.atomic import write_bytes
from fedehr.shared.errors import ConfigError

HEADER = b"fedehr-checkpoint-signature v1\n"

PublicKeyLike = Ed25519PublicKey | bytes | str | os.PathLike


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def signed_message(file_hashes: Mapping[str, str]) -> bytes:
    """The canonical bytes a checkpoint signature covers (file names sorted)."""
    lines = [f"{name} {file_hashes[name]}\n" for name in sorted(file_hashes)]
    return HEADER + "".join(lines).encode("ascii")


def sign(key: Ed25519PrivateKey, file_hashes: Mapping[str, str]) -> bytes:
    """Signature file content: base64 of the Ed25519 signature, one line."""
    return base64.b64encode(key.sign(signed_message(file_hashes))) + b"\n"


def verify(public_key: Ed25519PublicKey, signature_file: bytes,
           file_hashes: Mapping[str, str]) -> bool:
    try:
        signature = base64.b64decode(signature_file.strip(), validate=True)
        public_key.verify(signature, signed_message(file_hashes))
    except (InvalidSignature, ValueError):
        return False
    return True


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def fingerprint(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """``sha256:<hex>`` of the raw public key: how a person compares signers."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def generate_signing_key(path: str | os.PathLike, *, overwrite: bool = False
                         ) -> Ed25519PrivateKey:
    """Create an Ed25519 key at `path` (PKCS#8 PEM, 0600) and its public key at
    ``<path>.pub`` (PEM)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise ConfigError("a signing key already exists", where=str(path),
                          fix="use that key, or choose another path")
    key = Ed25519PrivateKey.generate()
    write_bytes(path, key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()), mode=0o600)
    write_bytes(path.with_name(path.name + ".pub"), public_pem(key), mode=0o644)
    return key


def load_signing_key(path: str | os.PathLike) -> Ed25519PrivateKey:
    path = Path(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot read the signing key ({exc})", where=str(path),
                          fix="give an unencrypted Ed25519 PEM key (fedehr pki init)") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError("the signing key is not Ed25519", where=str(path),
                          fix="give an Ed25519 key")
    return key


def load_public_key(source: PublicKeyLike) -> Ed25519PublicKey:
    """An Ed25519 public key from a key object, PEM bytes, or a PEM file path."""
    if isinstance(source, Ed25519PublicKey):
        return source
    where = "public key"
    try:
        if isinstance(source, bytes):
            pem = source
        else:
            where = str(source)
            pem = Path(source).read_bytes()
        key = serialization.load_pem_public_key(pem)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot read the public key ({exc})", where=where,
                          fix="give the signer's PEM public key (e.g. consortium.pub)") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError("the public key is not Ed25519", where=where,
                          fix="give the signer's Ed25519 public key")
    return key


def same_key(a: Ed25519PublicKey, b: Ed25519PublicKey) -> bool:
    raw = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return a.public_bytes(*raw) == b.public_bytes(*raw)
