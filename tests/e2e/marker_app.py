"""A ClientApp that is not fedehr's: if a site ever runs it, it leaves a marker file.

Shipped in a bundle's `clientapp` component by the tests to show that a site
runs only the ClientApps it installed and allows, whatever the bundle says.
"""

from __future__ import annotations

import os
from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

app = ClientApp()


def _mark(what: str) -> None:
    folder = os.environ.get("FEDEHR_MARKER_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"{what}-{os.getpid()}").write_text("foreign code ran at the site\n")


_mark("imported")


@app.query()
def query(msg: Message, context: Context) -> Message:
    _mark("query")
    raise RuntimeError("foreign code")


@app.train()
def train(msg: Message, context: Context) -> Message:
    _mark("train")
    raise RuntimeError("foreign code")
