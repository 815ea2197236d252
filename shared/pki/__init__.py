"""The consortium's PKI: TLS for the SuperLink, hospital keys, researcher certificates, signing.

The operator keeps one folder (default ``./pki``, option ``--dir``)::

    pki/
      ca.pem, ca.key                 consortium CA, EC P-384, self-signed, 10 years
      superlink.pem, superlink.key   SuperLink TLS certificate signed by the CA (serverAuth;
                                     SANs: every --host plus localhost, 127.0.0.1, ::1)
      sites/NAME.key                 a hospital's SuperNode key: OpenSSH ECDSA nistp384,
                                     for `flower-supernode --auth-supernode-private-key`
      sites/NAME.pub                 its public key "ecdsa-sha2-nistp384 AAAA... NAME",
                                     for `flwr supernode register`
      researchers/NAME.pem, .key     client certificate (clientAuth, CN=NAME, OU=ROLE with
                                     ROLE researcher or operator) for the checkpoint registry
      signing/consortium.key         Ed25519 key that signs checkpoints (PKCS#8)
      signing/consortium.pub         its public key (PEM), given to sites and researchers
      signing/consortium.ssh.pub     the same public key as an OpenSSH line (Flower's
                                     --trusted-entities form)
      signing/bundle.key, .pub       Ed25519 key whose signature approves app bundles
                                     (`fedehr pki bundle-key`; fedehr.shared.pki.bundle_signing)
      revoked.json                   revocation list: names, serials, fingerprints

Every private key is written 0600 through an atomic rename; an existing key is
never replaced unless asked (``force=True`` / ``--force``). What goes where:
ca.pem to every site and researcher; sites/NAME.key to hospital NAME only;
superlink.* to the SuperLink host only; ca.key and signing/consortium.key stay
with the operator (back them up offline). See docs/pki.md for the Flower
commands that consume these files.
"""

from __future__ import annotations

from fedehr.shared.pki.certificates import issue_client_cert, issue_server_cert, load_ca
from fedehr.shared.pki.consortium import init_ca
from fedehr.shared.pki.inventory import Credential, list_credentials
from fedehr.shared.pki.layout import PKIError, PKIPaths, validate_name
from fedehr.shared.pki.revocation import Revocation, is_revoked, load_revocations, revoke
from fedehr.shared.pki.signing import consortium_public_key, consortium_signing_key
from fedehr.shared.pki.site_keys import issue_site_key, register_hint, site_public_key_path

__all__ = [
    "Credential",
    "PKIError",
    "PKIPaths",
    "Revocation",
    "consortium_public_key",
    "consortium_signing_key",
    "init_ca",
    "is_revoked",
    "issue_client_cert",
    "issue_server_cert",
    "issue_site_key",
    "list_credentials",
    "load_ca",
    "load_revocations",
    "register_hint",
    "revoke",
    "site_public_key_path",
    "validate_name",
]
