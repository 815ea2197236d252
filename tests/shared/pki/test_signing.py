"""The consortium's Ed25519 signing key."""

from __future__ import annotations

from fedehr.shared.pki import consortium_public_key, consortium_signing_key


def test_consortium_signature_verifies_with_the_published_key(pki_dir):
    signature = consortium_signing_key(pki_dir).sign(b"checkpoint digest")
    consortium_public_key(pki_dir).verify(signature, b"checkpoint digest")  # raises if wrong
    assert len(signature) == 64
