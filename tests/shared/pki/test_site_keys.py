"""Hospital SuperNode keys in the OpenSSH form Flower reads."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedehr.shared.pki import PKIError, issue_site_key, site_public_key_path


def test_site_public_key_is_openssh_nistp384_matching_the_private_key(pki_dir):
    private_path, public_path = issue_site_key(pki_dir, "st-marys")
    line = public_path.read_text().strip()
    assert line.startswith("ecdsa-sha2-nistp384 AAAA") and line.endswith(" st-marys")
    public = serialization.load_ssh_public_key(line.encode())
    private = serialization.load_ssh_private_key(private_path.read_bytes(), password=None)
    assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp384r1"
    assert private.public_key() == public
    assert site_public_key_path(pki_dir, "st-marys") == public_path


@pytest.mark.parametrize("name", ["St-Marys", "", "a" * 41, "x/y", "../etc", "nürnberg"])
def test_invalid_site_name_is_refused(pki_dir, name):
    with pytest.raises(PKIError, match="invalid site name"):
        issue_site_key(pki_dir, name)


def test_site_key_needs_an_initialised_pki(tmp_path):
    with pytest.raises(PKIError, match="fedehr pki init"):
        issue_site_key(tmp_path / "nowhere", "st-marys")
