"""revoked.json: revoking researchers and sites."""

from __future__ import annotations

import pytest
from cryptography import x509

from fedehr.shared.pki import (
    PKIError,
    is_revoked,
    issue_client_cert,
    issue_site_key,
    load_revocations,
    revoke,
)


def test_revoke_marks_the_researcher_and_only_them(pki_dir):
    alice, _ = issue_client_cert(pki_dir, "alice")
    bob, _ = issue_client_cert(pki_dir, "bob")
    revoke(pki_dir, "alice")
    alice_cert = x509.load_pem_x509_certificate(alice.read_bytes())
    assert is_revoked(pki_dir, alice_cert) and is_revoked(pki_dir, alice)
    assert not is_revoked(pki_dir, bob)
    [entry] = load_revocations(pki_dir)
    assert (entry.name, entry.serial) == ("alice", format(alice_cert.serial_number, "x"))


def test_revoking_twice_records_once(pki_dir):
    _, pub = issue_site_key(pki_dir, "st-marys")
    revoke(pki_dir, "st-marys")
    revoke(pki_dir, "st-marys")
    assert [r.kind for r in load_revocations(pki_dir)] == ["site"]
    assert is_revoked(pki_dir, pub)


def test_revoking_an_unknown_name_is_an_error(pki_dir):
    with pytest.raises(PKIError, match="nothing issued to 'ghost'"):
        revoke(pki_dir, "ghost")
