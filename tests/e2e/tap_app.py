"""The ClientApp of the end-to-end tests: fedehr's own handlers, plus a tap and a saboteur.

- Every reply a site sends (vocabulary releases, updates, evaluations) is
  written in readable form to $FEDEHR_TAP_DIR, so a test can search all of it
  for record-level data.
- The site named in $FEDEHR_SABOTEUR replaces its trained update with NaNs,
  as a broken or hostile hospital would; the server must reject it.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.clientapp import ClientApp

from fedehr.client import flower_app as real
from fedehr.shared import messages as M
from fedehr.shared.packed_arrays import pack, unpack, unpack_torch

app = ClientApp()


def _tap(reply: Message) -> Message:
    if "FEDEHR_TAP_DIR" not in os.environ:
        return reply
    folder = Path(os.environ["FEDEHR_TAP_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    dump: dict = {"error": reply.error.reason if reply.has_error() else None, "records": {}}
    if not reply.has_error():
        for key, record in reply.content.items():
            if isinstance(record, ArrayRecord):  # unpacked from a copy: the reply goes on
                arrays = unpack(ArrayRecord(dict(record.items())))
                dump["records"][key] = {k: {"shape": list(v.shape), "dtype": v.dtype.name}
                                        for k, v in arrays.items()}
            elif isinstance(record, ConfigRecord | MetricRecord):
                dump["records"][key] = {k: v for k, v in record.items()}
    (folder / f"{uuid.uuid4().hex}.json").write_text(json.dumps(dump, default=str))
    return reply


@app.query()
def query(msg: Message, context: Context) -> Message:
    return _tap(real.query(msg, context))


@app.train()
def train(msg: Message, context: Context) -> Message:
    reply = real.train(msg, context)
    saboteur = os.environ.get("FEDEHR_SABOTEUR")
    if not reply.has_error() and saboteur == reply.content[M.SITE][M.SITE_NAME]:
        state = unpack_torch(reply.content[M.ARRAYS])
        reply.content[M.ARRAYS] = pack({k: torch.full_like(v, float("nan"))
                                        for k, v in state.items()})
    return _tap(reply)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return _tap(real.evaluate(msg, context))
