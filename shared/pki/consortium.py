"""Create a consortium's PKI: the CA and the consortium signing key, together."""

from __future__ import annotations

import os

from fedehr.shared.pki.certificates import create_ca
from fedehr.shared.pki.layout import PKIPaths, refuse_overwrite
from fedehr.shared.pki.signing import create_signing_key


def init_ca(dir: str | os.PathLike = "pki", name: str = "Consortium CA", *,
            force: bool = False) -> PKIPaths:
    """Create ca.pem/ca.key and signing/consortium.{key,pub} in `dir`; return its paths.

    Refuses (PKIError naming the file) if either key exists, unless `force`.
    """
    paths = PKIPaths.of(dir)
    refuse_overwrite(paths.ca_key, paths.ca_cert, paths.signing_key, force=force)
    create_ca(dir, name, force=force)
    create_signing_key(dir, force=force)
    for folder in (paths.sites_dir, paths.researchers_dir):
        folder.mkdir(parents=True, exist_ok=True)
    return paths
