"""The hospital's Flower ClientApp: turns Flower messages into site handler calls.

The SuperNode's node config names the site.yaml (``site-config``); everything
about the site comes from there, nothing from the message but the request.
Replies carry arrays, aggregate metrics and the site's name only. A handler
that refuses (budget spent, a bad request) replies with a Flower error whose
reason says why, so the server logs it and goes on with the other sites.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from flwr.app import ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedehr.client import activity
from fedehr.client.config import SiteConfig, load_site_config
from fedehr.shared import messages as M
from fedehr.shared.errors import FedEHRError

app = ClientApp()
log = logging.getLogger("fedehr.site")

ERROR_REFUSED = 4001  # the site declined: the reason says why


def _site(context: Context) -> SiteConfig:
    path = context.node_config.get("site-config") or os.environ.get("FEDEHR_SITE_CONFIG")
    if not path:
        raise FedEHRError("the SuperNode has no site-config", where="node config",
                          fix="start the site with `fedehr site start --config site.yaml`")
    site = load_site_config(Path(str(path)))
    _log_to_file(site)
    return site


def _log_to_file(site: SiteConfig) -> None:
    path = site.state_dir / "logs" / "site.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not any(getattr(h, "baseFilename", None) == str(path) for h in log.handlers):
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def _reply(msg: Message, site_name: str, **records) -> Message:
    content = RecordDict({**records, M.SITE: ConfigRecord({M.SITE_NAME: site_name})})
    return Message(content=content, reply_to=msg)


def _refuse(msg: Message, exc: Exception, site: SiteConfig | None = None) -> Message:
    reason = exc.one_line() if isinstance(exc, FedEHRError) else f"{type(exc).__name__}: {exc}"
    log.error("refused %s: %s", msg.metadata.message_type, reason)
    if site is not None:
        activity.record(site.state_dir, "refusal", message_type=msg.metadata.message_type,
                        reason=reason)
    return Message(Error(code=ERROR_REFUSED, reason=reason), reply_to=msg)


@app.query()
def query(msg: Message, context: Context) -> Message:
    from fedehr.client import site_handlers as H

    site = None
    try:
        site = _site(context)
        config = dict(msg.content[M.CONFIG])
        if config.get(M.QUERY) == M.QUERY_COUNTS:
            payload = H.release_counts(site, config)
        elif config.get(M.QUERY) == M.QUERY_VALUES:
            payload = H.release_values(site, config)
        else:
            raise FedEHRError(f"unknown query {config.get(M.QUERY)!r}", where="query")
        return _reply(msg, site.name, **{M.CONFIG: ConfigRecord(
            {M.RELEASE_JSON: json.dumps(payload)})})
    except Exception as exc:  # noqa: BLE001 - every failure becomes a refusal reply
        return _refuse(msg, exc, site)


@app.train()
def train(msg: Message, context: Context) -> Message:
    from fedehr.client import site_handlers as H
    from fedehr.shared import update_compression as compression
    from fedehr.shared.packed_arrays import pack, unpack_torch

    site = None
    try:
        site = _site(context)
        arrays = compression.received(unpack_torch(msg.content[M.ARRAYS]))
        config = dict(msg.content[M.CONFIG])
        state, metrics = H.train_round(site, arrays, config)
        if config.get(M.UPDATE_COMPRESSION) == compression.FLOAT16:  # after the DP noise
            state = compression.encode(state, arrays)
            metrics = {**metrics, M.UPDATE_FLOAT16_DELTA: 1.0}
        return _reply(msg, site.name, **{M.ARRAYS: pack(state),
                                         M.METRICS: MetricRecord(metrics)})
    except Exception as exc:  # noqa: BLE001
        return _refuse(msg, exc, site)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    from fedehr.client import site_handlers as H
    from fedehr.shared import update_compression as compression
    from fedehr.shared.packed_arrays import unpack_torch

    site = None
    try:
        site = _site(context)
        arrays = compression.received(unpack_torch(msg.content[M.ARRAYS]))
        metrics = H.evaluate_round(site, arrays, dict(msg.content[M.CONFIG]))
        return _reply(msg, site.name, **{M.METRICS: MetricRecord(metrics)})
    except Exception as exc:  # noqa: BLE001
        return _refuse(msg, exc, site)
