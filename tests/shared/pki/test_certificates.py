"""The CA, the SuperLink certificate and researcher certificates."""

from __future__ import annotations

import ipaddress
import stat

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from fedehr.shared.pki import PKIError, PKIPaths, issue_client_cert, issue_server_cert


def _load(path):
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_ca_verifies_server_cert_for_localhost_loopback_and_given_hosts(pki_dir):
    cert_path, _ = issue_server_cert(pki_dir, ["superlink.example.org", "10.0.0.5"])
    ca, cert = _load(PKIPaths.of(pki_dir).ca_cert), _load(cert_path)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"superlink.example.org", "localhost"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address(a) for a in ("10.0.0.5", "127.0.0.1", "::1")}
    verifier = PolicyBuilder().store(Store([ca])).build_server_verifier(
        x509.DNSName("superlink.example.org"))
    verifier.verify(cert, [])  # raises if the chain, the name or the EKU is wrong
    for ip in ("127.0.0.1", "::1"):
        PolicyBuilder().store(Store([ca])).build_server_verifier(
            x509.IPAddress(ipaddress.ip_address(ip))).verify(cert, [])


def test_every_private_key_is_owner_only(pki_dir):
    issue_server_cert(pki_dir, ["localhost"])
    issue_client_cert(pki_dir, "alice")
    keys = [p for p in pki_dir.rglob("*.key")]
    assert len(keys) == 4  # ca, signing, superlink, researcher
    assert {stat.S_IMODE(p.stat().st_mode) for p in keys} == {0o600}


def test_existing_key_is_not_overwritten_without_force(pki_dir):
    _, key = issue_server_cert(pki_dir, ["a.example.org"])
    before = key.read_bytes()
    with pytest.raises(PKIError, match="superlink.key.*--force"):
        issue_server_cert(pki_dir, ["b.example.org"])
    assert key.read_bytes() == before
    issue_server_cert(pki_dir, ["b.example.org"], force=True)
    assert key.read_bytes() != before


def test_researcher_certificate_carries_role_and_client_auth(pki_dir):
    cert_path, _ = issue_client_cert(pki_dir, "bob", role="operator")
    cert = _load(cert_path)
    ou = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert (ou, list(eku)) == ("operator", [ExtendedKeyUsageOID.CLIENT_AUTH])
    ca = _load(PKIPaths.of(pki_dir).ca_cert)
    cert.verify_directly_issued_by(ca)


def test_server_cert_lasts_the_days_asked_from_its_start(pki_dir):
    import datetime as dt

    start = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    cert_path, _ = issue_server_cert(pki_dir, ["10.0.0.5"], days=2, valid_from=start)
    cert = _load(cert_path)
    assert cert.not_valid_after_utc == start + dt.timedelta(days=2)  # expired long ago
    assert cert.not_valid_before_utc < start


def test_server_cert_refuses_a_validity_under_one_day(pki_dir):
    with pytest.raises(PKIError, match="at least 1 day"):
        issue_server_cert(pki_dir, ["10.0.0.5"], days=0)
