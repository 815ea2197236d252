"""The ServerApp of the secure-aggregation e2e test: fedehr's own, recording what it receives.

Every reply the server-side code gets from the grid (all four SecAgg+ stages,
vocabulary and evaluate replies too) and everything the workflow hands
`SumOnly.aggregate_fit` is written under `<workdir>/secagg-record/`, so the
test can show that no individual site update was ever in the server's hands.
Arrays are stored with numpy's own format (no pickle).
"""

from __future__ import annotations

import itertools
import json
import logging
import sys
from pathlib import Path

import numpy as np
from flwr.app import Context
from flwr.common import bytes_to_ndarray, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.serverapp import Grid, ServerApp

from fedehr.server import secure_rounds
from fedehr.server.config import load_federation_config
from fedehr.server.federation import Federation

app = ServerApp()
_counter = itertools.count()


class RecordingGrid:
    def __init__(self, grid: Grid, folder: Path):
        self._grid, self._folder = grid, folder

    def __getattr__(self, name):
        return getattr(self._grid, name)

    def send_and_receive(self, messages, *, timeout=None):
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        for reply in replies:
            _record_reply(self._folder, reply)
        return replies

    def pull_messages(self, message_ids):
        replies = list(self._grid.pull_messages(message_ids))
        for reply in replies:
            _record_reply(self._folder, reply)
        return replies


def _record_reply(folder: Path, reply) -> None:
    n = next(_counter)
    entry = {"n": n, "type": reply.metadata.message_type, "node": reply.metadata.src_node_id,
             "error": reply.error.reason if reply.has_error() else None, "arrays": [],
             "masked": False, "metrics": {}, "config_keys": {}}
    arrays = {}
    if not reply.has_error():
        for name, record in reply.content.array_records.items():
            for key, array in record.items():
                arrays[f"array/{name}/{key}"] = array.numpy()
        for name, record in reply.content.metric_records.items():
            entry["metrics"][name] = {k: v for k, v in record.items()}
        for name, record in reply.content.config_records.items():
            entry["config_keys"][name] = sorted(record.keys())
            if name == RECORD_KEY_CONFIGS and Key.MASKED_PARAMETERS in record:
                entry["masked"] = True
                for i, raw in enumerate(record[Key.MASKED_PARAMETERS]):
                    arrays[f"masked/{i:04d}"] = bytes_to_ndarray(raw)
            if name.endswith("metrics"):  # legacy FitRes metrics (a ConfigRecord)
                entry["metrics"][name] = dict(record)
    entry["arrays"] = sorted(arrays)
    if arrays:
        np.savez(folder / f"reply-{n:05d}.npz", **{k.replace("/", "|"): v
                                                   for k, v in arrays.items()})
    (folder / f"reply-{n:05d}.json").write_text(json.dumps(entry, default=str))


def _recording_aggregate_fit(folder: Path, original):
    def aggregate_fit(self, server_round, results, failures):
        arrays = {}
        ids = []
        for i, (_proxy, fit_res) in enumerate(results):
            ids.append(id(fit_res.parameters))
            for j, arr in enumerate(parameters_to_ndarrays(fit_res.parameters)):
                arrays[f"result{i}|{j:04d}"] = arr
        np.savez(folder / f"aggregate-fit-round{server_round}.npz", **arrays)
        (folder / f"aggregate-fit-round{server_round}.json").write_text(json.dumps(
            {"results": len(results), "distinct_parameter_objects": len(set(ids)),
             "failures": len(failures)}))
        return original(self, server_round, results, failures)
    return aggregate_fit


@app.main()
def main(grid: Grid, context: Context) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout)
    cfg = load_federation_config(Path(str(context.run_config["federation-config"])))
    folder = cfg.workdir / "secagg-record"
    folder.mkdir(parents=True, exist_ok=True)
    secure_rounds.SumOnly.aggregate_fit = _recording_aggregate_fit(
        folder, secure_rounds.SumOnly.aggregate_fit)
    Federation(cfg).run(RecordingGrid(grid, folder), resume=False)
