"""A model's round trip through a real SuperLink: one Flower Array per tensor vs packed.

Side by side in one federation (TLS SuperLink with hospital authentication,
three `fedehr site start` daemons on loopback, as `make demo` runs them): a
ServerApp of this file sends the model's weights to every site and a ClientApp
of this file sends them straight back, alternating two forms of the same
weights, several times each:
  per tensor   ArrayRecord(state_dict): Flower's usual form, one Array per tensor
  packed       shared.packed_arrays.pack: one Array per dtype plus the layout
Each round trip is timed in the ServerApp from the push to the last reply (Flower
objects are pulled one request each by the SuperNodes, then by the server).
No training: what is measured is transfer alone. Prints a table and writes
benchmarks/results/model_transfer.{json,txt}.

    .venv/bin/python benchmarks/model_transfer.py [--repeats 3] [--presets tiny,small]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common import MessageType
from flwr.serverapp import Grid, ServerApp

RESULTS = Path(__file__).parent / "results" / "model_transfer.json"
OUT_ENV = "FEDEHR_MODEL_TRANSFER_OUT"  # where the ServerApp writes its timings
SPEC_ENV = "FEDEHR_MODEL_TRANSFER_SPEC"  # presets, vocabulary size and repeats, as JSON
VOCAB = 2_200  # about the default federation's vocabulary (fed_vs_central, demo)

client = ClientApp()
server = ServerApp()


@client.train()
def echo(msg: Message, context: Context) -> Message:
    """The weights straight back, in the form they came."""
    return Message(RecordDict({"arrays": msg.content["arrays"],
                               "site": ConfigRecord({"node": context.node_id})}),
                   reply_to=msg)


def _objects(record: ArrayRecord) -> int:
    """The objects of a message carrying `record`: one request each for whoever pulls it."""
    from flwr.supercore.inflatable.inflatable_object import get_object_tree, iterate_object_tree

    message = Message(RecordDict({"arrays": record}), dst_node_id=0,
                      message_type=MessageType.TRAIN)
    return sum(1 for _ in iterate_object_tree(get_object_tree(message)))


@server.main()
def measure(grid: Grid, context: Context) -> None:
    import torch

    from fedehr.server.streaming import stream_replies
    from fedehr.shared.model import EHRModel, ModelConfig
    from fedehr.shared.packed_arrays import pack

    spec = json.loads(os.environ[SPEC_ENV])
    deadline = time.monotonic() + 120
    while len(list(grid.get_node_ids())) < spec["sites"] and time.monotonic() < deadline:
        time.sleep(0.5)
    nodes = list(grid.get_node_ids())
    rows = []
    for preset in spec["presets"]:
        # nudged as training would: Flower sends identical tensors (a fresh model's
        # LayerNorm ones and zeros) as one object, a trained model's are all distinct
        state = {k: v + 1e-3 * torch.randn_like(v) if v.is_floating_point() else v for k, v
                 in EHRModel(ModelConfig.preset(preset, spec["vocab"])).state_dict().items()}
        forms = {"per tensor": lambda s=state: ArrayRecord(s), "packed": lambda s=state: pack(s)}
        for repeat in range(spec["repeats"]):
            for form, build in forms.items():
                record = build()
                objects = _objects(record)
                messages = [Message(RecordDict({"arrays": record}), dst_node_id=node,
                                    message_type=MessageType.TRAIN) for node in nodes]
                started = time.monotonic()
                replies = list(stream_replies(grid, messages, timeout=300))
                seconds = time.monotonic() - started
                rows.append({"preset": preset, "form": form, "repeat": repeat,
                             "tensors": len(state), "objects": objects,
                             "megabytes": sum(t.numel() * t.element_size()
                                              for t in state.values()) / 1e6,
                             "sites": len(nodes), "replies": len(replies),
                             "seconds": seconds})
    Path(os.environ[OUT_ENV]).write_text(json.dumps(rows))


def run(root: Path, presets: list[str], repeats: int, patients: int) -> list[dict]:
    from fedehr.server.local_federation import HospitalSpec, LocalFederation
    from fedehr.shared.data.anchor import fetch_anchor
    from fedehr.shared.data.synth import synthesize

    hospitals = [HospitalSpec(s.name, Path(s.path), s.harmonisation)
                 for s in synthesize(root / "h", sites=3, patients=patients, seed=3)]
    out = root / "timings.json"
    os.environ[OUT_ENV] = str(out)
    os.environ[SPEC_ENV] = json.dumps({"presets": presets, "repeats": repeats,
                                       "vocab": VOCAB, "sites": len(hospitals)})
    # Flower's processes (the ServerApp, the site workers) import this file by name
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).parent), *filter(None, [os.environ.get("PYTHONPATH")])])
    fed = LocalFederation.create(root / "fed", hospitals, anchor=fetch_anchor(),
                                 site={"training": {"threads": 1}})
    fed.clientapp, fed.serverapp = "model_transfer:client", "model_transfer:server"
    try:
        fed.start_all()
        log = fed.config.workdir / "logs" / f"run-{fed.launch()}.log"
        deadline = time.monotonic() + 1800
        while not out.exists():
            if "ServerApp raised" in (log.read_text() if log.exists() else "") \
                    or time.monotonic() > deadline:
                raise SystemExit(f"no timings; the ServerApp's log says:\n{log.read_text()}")
            time.sleep(1)
        rows = json.loads(out.read_text())
        downloads = [_downloads(fed.root / "site-state" / h.name / "logs" / "worker.log")
                     for h in hospitals]
        for i, row in enumerate(rows):  # the sites answer the messages in the order sent
            row["site_download_seconds"] = [d[i] for d in downloads]
        return rows
    finally:
        fed.stop()


def _downloads(worker_log: Path) -> list[float]:
    """How long the site's worker waited for each message's arrays (its log, in order)."""
    return [float(s) for s in re.findall(r"\(train\) started \(input pulled in ([\d.]+) s\)",
                                         worker_log.read_text())]


def table(rows: list[dict]) -> str:
    lines = ["| model | form | tensors | Flower objects | MB | a site's download (s) | "
             "round trip, 3 sites (s) | packed is faster by (download / round trip) |",
             "|---|---|---|---|---|---|---|---|"]
    for preset in dict.fromkeys(r["preset"] for r in rows):
        download, trip = {}, {}
        for form in ("per tensor", "packed"):
            mine = [r for r in rows if r["preset"] == preset and r["form"] == form]
            pulls = [s for r in mine for s in r["site_download_seconds"]]
            download[form] = statistics.median(pulls)
            trip[form] = statistics.median(r["seconds"] for r in mine)
            ratio = (f"{download['per tensor'] / download[form]:.0f}x / "
                     f"{trip['per tensor'] / trip[form]:.1f}x") if form == "packed" else ""
            trips = ", ".join(f"{r['seconds']:.1f}" for r in mine)
            lines.append(
                f"| {preset} | {form} | {mine[0]['tensors']} | {mine[0]['objects']} | "
                f"{mine[0]['megabytes']:.1f} | {download[form]:.2f} ({min(pulls):.2f}-"
                f"{max(pulls):.2f}) | {trip[form]:.2f} ({trips}) | {ratio} |")
    lines.append("Medians; a site's download over all sites and repeats (range), the round trip "
                 "over repeats (each listed).")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="round trips per form and model")
    parser.add_argument("--presets", default="tiny,small", help="model presets, comma-separated")
    parser.add_argument("--patients", type=int, default=300, help="synthetic patients (the "
                        "sites only need to start)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fedehr-transfer-") as tmp:
        rows = run(Path(tmp), args.presets.split(","), args.repeats, args.patients)
    print(table(rows))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.with_suffix(".txt").write_text(f"# {os.cpu_count()} cores, {time.strftime('%F')}\n"
                                           + table(rows) + "\n")
    RESULTS.write_text(json.dumps({"command": " ".join(["benchmarks/model_transfer.py",
                                                        *sys.argv[1:]]),
                                   "cores": os.cpu_count(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
