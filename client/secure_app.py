"""The hospital's ClientApp for federations with secure aggregation (SecAgg+).

Flower 1.42 runs SecAgg+ only on its legacy path, so this is a legacy
`ClientApp(client_fn=..., mods=[...])` with `secaggplus_mod`: the mod takes
part in the key agreement, and in the "collect masked vectors" stage calls
`SiteClient.fit`, which trains exactly as a plain round does
(`site_handlers.train_round`: DP-SGD with Opacus, charged to the privacy
ledger, stored by round id so a repeated request costs no budget) and returns
the update, trained minus global weights. The mod quantizes and masks it; the
server only ever unmasks the sum over the sites.

Messages that are not SecAgg+ (the vocabulary round's queries, the new-API
evaluate messages carrying global weights) are served by the plain ClientApp's
handlers (`fedehr.client.flower_app`) before the mod sees them. A plain
training request is refused: a site running this app has agreed to send
updates only under secure aggregation. Any failure becomes a Flower error
reply whose reason says why (budget spent, a bad request), so the server
logs it and SecAgg+ goes on without the site if enough remain.

Keep the import path light: Flower starts a fresh process for each of the
four messages of a secure round, and three of them need no torch.
"""

from __future__ import annotations

import json

import numpy as np
from flwr.app import Context, Message
from flwr.app.message_type import MessageType
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp

from fedehr.client import flower_app as plain
from fedehr.shared import messages as M
from fedehr.shared.errors import FedEHRError


class SecureRequestRefused(FedEHRError):
    """A request this site answers only under secure aggregation, or a bad one."""


class SiteClient(NumPyClient):
    """fit/evaluate on the site's own handlers; parameters travel in ARRAY_NAMES order."""

    def __init__(self, context: Context):
        self.context = context

    def fit(self, parameters, config):
        from fedehr.client import site_handlers as H

        site = plain._site(self.context)
        arrays = _named_tensors(parameters, config)
        state, metrics = H.train_round(site, arrays, dict(config))
        patients = int(metrics[M.NUM_EXAMPLES])  # 1 unless site.yaml makes counts public
        max_weight = float(config.get(M.SECAGG_MAX_WEIGHT, patients))
        if patients > max_weight:
            raise SecureRequestRefused(
                f"this site trains on {patients} patients, more than the federation's "
                f"secagg.max_weight {max_weight:g}; its weight would overflow SecAgg+",
                where=site.name, fix="the operator raises secagg.max_weight in federation.yaml")
        update = [state[name].double().numpy() - np.asarray(p, dtype=np.float64)
                  for name, p in zip(arrays, parameters, strict=True)]
        clip = float(config.get(M.SECAGG_CLIPPING_RANGE, np.inf)) * max_weight / patients
        reply = {**metrics, M.SITE_NAME: site.name,  # legacy metrics: scalars, so JSON
                 M.LEDGER_HISTORY: json.dumps(metrics.get(M.LEDGER_HISTORY, [])),
                 M.SECAGG_CLIPPED: clipped_fraction(update, clip)}
        return update, patients, reply

    def evaluate(self, parameters, config):
        from fedehr.client import site_handlers as H

        site = plain._site(self.context)
        metrics = H.evaluate_round(site, _named_tensors(parameters, config), dict(config))
        # no loss when the site keeps it (privacy.release_metrics): NaN, as Flower needs one
        return (float(metrics.get(M.EVAL_LOSS, float("nan"))), int(metrics[M.NUM_EXAMPLES]),
                metrics)


def clipped_fraction(update: list[np.ndarray], bound: float) -> float:
    """Share of update values outside [-bound, bound] (SecAgg+ clips them to the bound).

    SecAgg+ clips the weighted value (update x patients / max_weight), so a
    site's own bound on its raw update is clipping_range x max_weight / patients.
    """
    total = sum(u.size for u in update)
    over = sum(int(np.count_nonzero(np.abs(u) > bound)) for u in update)
    return over / total if total else 0.0


def _named_tensors(parameters, config) -> dict:
    import torch

    names = json.loads(str(config.get(M.ARRAY_NAMES, "[]")))
    if len(names) != len(parameters):
        raise SecureRequestRefused(f"the request names {len(names)} arrays but carries "
                                   f"{len(parameters)}", where="secure training request",
                                   fix="server and site must run the same fedehr version")
    return {name: torch.tensor(np.array(p)) for name, p in zip(names, parameters, strict=True)}


def client_fn(context: Context):
    return SiteClient(context).to_client()


def fedehr_messages_mod(msg: Message, context: Context, call_next) -> Message:
    """Serve fedehr's new-API messages; refuse plain training; turn failures into refusals."""
    kind = msg.metadata.message_type
    if kind == MessageType.QUERY:
        return plain.query(msg, context)
    if M.ARRAYS in msg.content.array_records:  # fedehr's own (new-API) train/evaluate message
        if kind == MessageType.EVALUATE:
            return plain.evaluate(msg, context)
        return plain._refuse(msg, SecureRequestRefused(
            "plain training request refused: this site sends updates only under secure "
            "aggregation", where="secure ClientApp",
            fix="set secure_aggregation: true in federation.yaml, or approve the plain "
                "ClientApp (fedehr.client.flower_app:app) at this site"))
    try:
        return call_next(msg, context)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a refusal reply
        return plain._refuse(msg, exc)


app = ClientApp(client_fn=client_fn, mods=[fedehr_messages_mod, secaggplus_mod])
