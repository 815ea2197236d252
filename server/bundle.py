"""The Flower app bundle (FAB) fedehr ships with `flwr run`: configuration only.

The bundle is a folder with one pyproject.toml whose components point at the
installed fedehr (`fedehr.server.flower_app:app`, `fedehr.client.flower_app:app`)
and whose run config names the federation.yaml. No code travels with it: what
runs at a hospital is the fedehr the hospital installed.
"""

from __future__ import annotations

from pathlib import Path

from fedehr.shared import __version__
from fedehr.shared.atomic import write_text

SERVERAPP = "fedehr.server.flower_app:app"
CLIENTAPP = "fedehr.client.flower_app:app"


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
'''
    write_text(folder / "pyproject.toml", text)
    return folder
