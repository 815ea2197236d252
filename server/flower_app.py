"""The consortium's Flower ServerApp.

`flwr run` ships an app bundle that carries configuration only (see
`fedehr.server.bundle`); this module, from the installed fedehr, is what
runs. The run config names the federation.yaml and whether to resume.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedehr.server.config import load_federation_config

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    from fedehr.server.federation import Federation

    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # one line per request otherwise, each pushed to the SuperLink's log store
    logging.getLogger("httpx").setLevel(logging.WARNING)
    cfg = load_federation_config(Path(str(context.run_config["federation-config"])))
    resume = bool(context.run_config.get("resume", False))
    Federation(cfg).run(grid, resume=resume)
