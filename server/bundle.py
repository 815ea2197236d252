"""The Flower app bundle (FAB) fedehr ships with `flwr run`: configuration only.

The bundle is a folder with one pyproject.toml whose components point at the
installed fedehr (`fedehr.server.flower_app:app`, `fedehr.client.flower_app:app`)
and whose run config names the federation.yaml. No code travels with it: what
runs at a hospital is the fedehr the hospital installed.

Sites approve a bundle by its FAB hash (sha256 of the zip Flower builds and
ships; Flower's builds are reproducible, so `bundle_hash` here gives the hash
the site will see) or by the consortium's signature over that hash, which
`fedehr run start` passes in the run config (`sign_bundle`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from fedehr.shared import __version__
from fedehr.shared.atomic import write_text

SERVERAPP = "fedehr.server.flower_app:app"
CLIENTAPP = "fedehr.client.flower_app:app"
SECURE_CLIENTAPP = "fedehr.client.secure_app:app"  # SecAgg+ (`secure_aggregation: true`)


def clientapp_for(secure_aggregation: bool) -> str:
    """The installed ClientApp a run's bundle names: secure runs need the SecAgg+ one."""
    return SECURE_CLIENTAPP if secure_aggregation else CLIENTAPP


def write_bundle(folder: Path, federation_config: Path, *, name: str = "fedehr-federation",
                 serverapp: str = SERVERAPP, clientapp: str = CLIENTAPP) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = f'''[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "{name}"
version = "{__version__}"
description = "fedehr federated run (configuration only; code is the installed fedehr)"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "fedehr"

[tool.flwr.app.components]
serverapp = "{serverapp}"
clientapp = "{clientapp}"

[tool.flwr.app.config]
federation-config = "{federation_config.resolve()}"
resume = false
{SIGNATURE_KEY} = ""
'''
    write_text(folder / "pyproject.toml", text)
    return folder


# The run-config key that carries the signature (the site reads it from the run; a
# default must exist in the bundle because Flower refuses overrides of unknown keys).
SIGNATURE_KEY = "fedehr-bundle-signature"


def bundle_hash(folder: Path) -> str:
    """The FAB hash Flower will ship and sites will see for this bundle folder."""
    from flwr.cli.build import build_fab_from_disk

    return hashlib.sha256(build_fab_from_disk(folder)).hexdigest()


def sign_bundle(folder: Path, pki: str | os.PathLike | None) -> tuple[str, str | None]:
    """(FAB hash, base64 signature by pki/signing/bundle.key, or None without that key)."""
    from fedehr.shared.pki.bundle_signing import load_bundle_private_key, sign_fab_hash

    digest = bundle_hash(folder)
    key = load_bundle_private_key(pki) if pki is not None else None
    return digest, (sign_fab_hash(key, digest) if key is not None else None)
