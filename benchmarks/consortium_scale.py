"""A consortium of up to a hundred sites: what the server needs per round.

For an operator planning a consortium before anyone installs a site.

Two parts, side by side in one run:

1. Aggregation alone (no Flower runtime): fedehr's own plain round
   (`Federation._plain_train`: pull, screen, fold into the streaming mean) fed
   by an in-process grid whose N sites answer with DP-noised updates of the
   right shapes, each built only when pulled. Peak RSS growth of this process
   over the round (VmHWM, reset before it), seconds, and GB of updates per
   second, for 10, 30, 100 sites of the tiny and small presets.
2. Flower's simulation engine (`flwr.simulation.run_simulation`, Ray backend):
   fedehr's ServerApp code (`Federation.run`: vocabulary round, round-0
   evaluation, training rounds, screening, aggregation, signed checkpoints)
   with N virtual sites. Each virtual site has its own site.yaml, state folder
   and privacy ledger over one of a few small synthetic hospitals. Two kinds
   of virtual sites:
   - `real`: fedehr's ClientApp handlers as a hospital runs them (DP-SGD with
     Opacus, ledger charge), plain or SecAgg+ (the secure ClientApp);
   - `noised`: the real query and evaluation handlers, but training replies
     with the global weights plus Gaussian noise (no DP-SGD): this measures the
     server side at sizes where training 100 sites on 2 shared cores would
     take too long. The ServerApp cannot tell the two apart.
   The ServerApp runs in this (the driver) process: its peak RSS growth over
   each training round is measured here (it also holds Flower's in-memory
   link state, i.e. the messages in flight).

    .venv/bin/python benchmarks/consortium_scale.py            # the full table (~15 min)
    .venv/bin/python benchmarks/consortium_scale.py --quick    # 10 sites only

Writes benchmarks/results/consortium_scale.{json,txt}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
PRESETS = ("tiny", "small")
MAX_LEN = 48
POOL_HOSPITALS, POOL_PATIENTS = 4, 320  # the virtual sites share these hospitals' data


# -- memory of this process ------------------------------------------------------------


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


class PeakRSS:
    """Peak resident memory of this process over a block, above the RSS at its start."""

    def __enter__(self):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        self.start_mb = _status_kb("VmRSS") / 1024
        return self

    def __exit__(self, *exc):
        self.peak_mb = _status_kb("VmHWM") / 1024
        self.growth_mb = self.peak_mb - self.start_mb


# -- part 1: aggregation alone -----------------------------------------------------------


class NoisedSitesGrid:
    """N sites that each answer one training message with global + noise, built when pulled."""

    def __init__(self, sites: int, sigma: float = 1e-3):
        self.sites, self.sigma = sites, sigma

    def get_node_ids(self):
        return list(range(1, self.sites + 1))

    def push_messages(self, messages):
        from flwr.app import ArrayRecord

        from fedehr.shared.packed_arrays import unpack

        self._sent = {}
        for i, msg in enumerate(messages):
            self._sent[f"m{i}"] = (msg.metadata.dst_node_id,
                                   unpack(ArrayRecord(dict(msg.content["arrays"].items())))
                                   if i == 0 else None)
        self._global = self._sent["m0"][1]
        return list(self._sent)

    def pull_messages(self, message_ids):
        from types import SimpleNamespace

        from flwr.app import ConfigRecord, MetricRecord, RecordDict

        from fedehr.shared import messages as M
        from fedehr.shared.packed_arrays import pack

        replies = []
        for mid in message_ids:
            node, _ = self._sent[mid]
            arrays = {}
            for k, v in self._global.items():
                noised = np.random.default_rng(node).standard_normal(v.shape, dtype=v.dtype)
                noised *= self.sigma
                noised += v
                arrays[k] = noised
            content = RecordDict({M.ARRAYS: pack(arrays),  # as the sites send them
                                  M.METRICS: MetricRecord({M.NUM_EXAMPLES: float(node)}),
                                  M.SITE: ConfigRecord({M.SITE_NAME: f"site-{node:03d}"})})
            replies.append(SimpleNamespace(
                content=content, has_error=lambda: False,
                metadata=SimpleNamespace(reply_to_message_id=mid, src_node_id=node)))
        return replies


def aggregation_alone(root: Path, preset: str, sites: int, anchor: Path) -> dict:
    import torch
    from flwr.supercore.task_identity import TaskIdentity

    from fedehr.server.config import FederationConfig, StrategyConfig, SuperLinkConfig
    from fedehr.server.federation import Federation
    from fedehr.shared.model import EHRModel, ModelConfig

    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = 1, 0, 1
    fed = Federation(FederationConfig(name="agg", workdir=root / f"agg-{preset}-{sites}",
                                      anchor=anchor, min_sites=sites, round_timeout=600,
                                      strategy=StrategyConfig(name="fedavg"),
                                      superlink=SuperLinkConfig(insecure=True)))
    torch.manual_seed(0)
    model = EHRModel(ModelConfig.preset(preset, 2000, max_len=MAX_LEN, note_dim=0,
                                        image_dim=0))
    reference = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    model_bytes = sum(a.nbytes for a in reference.values())
    started = time.monotonic()
    with PeakRSS() as rss:
        trained = fed._plain_train(NoisedSitesGrid(sites), 1, model, reference, {})
    seconds = time.monotonic() - started
    return {"part": "aggregation alone", "preset": preset, "sites": sites,
            "model_mb": model_bytes / 1e6, "updates_gb": trained.bytes_in / 1e9,
            "round_s": seconds, "aggregation_s": trained.aggregation_seconds,
            "aggregation_gb_per_s": trained.bytes_in / 1e9 / trained.aggregation_seconds,
            "aggregation_cpu_s": trained.extra["aggregation_cpu_seconds"],
            "aggregation_gb_per_cpu_s": trained.bytes_in / 1e9
            / trained.extra["aggregation_cpu_seconds"],
            "intake_gb_per_s": trained.bytes_in / 1e9 / seconds,
            "rss_growth_mb": rss.growth_mb,  # MiB, as /proc reports
            "rss_growth_x_model": rss.growth_mb * 2**20 / model_bytes}


def in_fresh_process(fn, *args):
    """fn(*args) in a new interpreter: its RSS growth is not hidden by memory an earlier
    measurement freed (the allocator keeps and reuses it)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


# -- part 2: Flower's simulation engine ----------------------------------------------------


def make_pool(root: Path) -> list:
    from fedehr.shared.data.synth import synthesize

    return synthesize(root / "hospitals", sites=POOL_HOSPITALS, patients=POOL_PATIENTS,
                      seed=0, overwrite=True)


def write_consortium(root: Path, pool, sites: int, preset: str, secure: bool, rounds: int,
                     anchor: Path) -> tuple[Path, list[Path]]:
    import yaml

    from fedehr.shared.atomic import write_text

    names = [f"site-{i:03d}" for i in range(sites)]
    site_yamls = []
    for i, name in enumerate(names):
        hospital = pool[i % len(pool)]
        cfg = {"name": name, "data": str(hospital.path), "state_dir": str(root / "state" / name),
               "insecure": True, "training": {"threads": 1},
               "privacy": {"epsilon": 8.0, "delta": 1e-5, "accountant": "rdp",
                           "epsilon_per_run": 8.0}}
        if hospital.harmonisation:
            cfg["harmonisation"] = str(hospital.harmonisation)
        path = root / "sites" / f"{name}.yaml"
        write_text(path, yaml.safe_dump(cfg, sort_keys=False))
        site_yamls.append(path)
    fed = {"name": "sim", "workdir": str(root / "federation"), "sites": names,
           "min_sites": sites, "rounds": rounds, "round_timeout": 900,
           "superlink": {"insecure": True},
           "anchor": str(anchor), "secure_aggregation": secure,
           "vocabulary": {"min_count": 5},
           "model": {"preset": preset, "max_len": MAX_LEN, "notes": False, "images": False,
                     "pro": False},
           "local": {"steps": 2, "batch_size": 8, "lr": 2e-3},
           "warm_start": {"enabled": False}}
    fed_yaml = root / "federation.yaml"
    write_text(fed_yaml, yaml.safe_dump(fed, sort_keys=False))
    return fed_yaml, site_yamls


_RUN: dict = {}  # what the simulated ServerApp reads and leaves (it runs in a thread here)


def _measured_federation_class():
    from fedehr.server.federation import Federation

    class MeasuredFederation(Federation):
        """fedehr's Federation, with this process's peak RSS over each training exchange."""

        def _plain_train(self, *args):
            return _measured(super()._plain_train, *args)

        def _secure_train(self, *args):
            return _measured(super()._secure_train, *args)

    def _measured(train, *args):
        with PeakRSS() as rss:
            trained = train(*args)
        trained.extra["server_rss"] = {"start_mb": rss.start_mb, "peak_mb": rss.peak_mb,
                                       "growth_mb": rss.growth_mb}
        return trained

    return MeasuredFederation


def server_app():
    from flwr.serverapp import ServerApp

    from fedehr.server.config import load_federation_config

    app = ServerApp()

    @app.main()
    def main(grid, context) -> None:
        cfg = load_federation_config(_RUN["fed_yaml"])
        try:
            _RUN["result"] = _measured_federation_class()(cfg).run(grid)
        except Exception as exc:  # noqa: BLE001 - reported by the caller
            _RUN["error"] = repr(exc)

    return app


def _site_yaml(context) -> str:
    return str(_RUN["site_yamls"][int(context.node_config["partition-id"])])


def with_site_config(msg, context, call_next):
    """A virtual site is a partition: point it at its own site.yaml, as the SuperNode's
    node config does for a real one."""
    context.node_config["site-config"] = _site_yaml(context)
    return call_next(msg, context)


def client_app(kind: str, secure: bool):
    from flwr.app import MetricRecord
    from flwr.clientapp import ClientApp

    from fedehr.client import flower_app as plain
    from fedehr.shared import messages as M
    from fedehr.shared.packed_arrays import pack, unpack

    if secure:
        from flwr.client.mod import secaggplus_mod

        from fedehr.client import secure_app

        return ClientApp(client_fn=secure_app.client_fn,
                         mods=[with_site_config, secure_app.fedehr_messages_mod,
                               secaggplus_mod])
    app = ClientApp(mods=[with_site_config])
    app.query()(plain.query)
    app.evaluate()(plain.evaluate)
    if kind == "real":
        app.train()(plain.train)
        return app

    @app.train()
    def noised_train(msg, context):
        """The global weights plus noise of a DP update's size; no DP-SGD."""
        partition = int(context.node_config["partition-id"])
        rng = np.random.default_rng(partition)
        state = {k: v + rng.normal(0, 1e-3, v.shape).astype(np.float32)
                 for k, v in unpack(msg.content[M.ARRAYS]).items()}
        metrics = {M.NUM_EXAMPLES: 1.0, M.EPSILON: 0.0, M.EPSILON_BUDGET: 8.0,
                   M.DELTA: 1e-5, M.NOISE_MULTIPLIER: 1.0}
        return plain._reply(msg, f"site-{partition:03d}", **{
            M.ARRAYS: pack(state), M.METRICS: MetricRecord(metrics)})

    return app


def simulate(root: Path, pool, anchor: Path, *, sites: int, preset: str, kind: str,
             secure: bool, rounds: int) -> dict:
    """One simulated federation; rows of its training rounds."""
    from flwr.simulation import run_simulation

    root.mkdir(parents=True, exist_ok=True)
    fed_yaml, site_yamls = write_consortium(root, pool, sites, preset, secure, rounds, anchor)
    _RUN.clear()
    _RUN.update(fed_yaml=fed_yaml, site_yamls=site_yamls)
    started = time.monotonic()
    run_simulation(server_app=server_app(), client_app=client_app(kind, secure),
                   num_supernodes=sites,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": os.cpu_count() or 2,
                                                 "include_dashboard": False}})
    if "error" in _RUN or "result" not in _RUN:
        raise RuntimeError(f"simulated run failed: {_RUN.get('error', 'no result')}")
    rows = []
    for entry in _RUN["result"]["history"][1:]:
        rss = entry.get("server_rss", {})
        rows.append({"part": "simulation", "clients": kind, "preset": preset, "sites": sites,
                     "mode": "secure" if secure else "plain", "round": entry["round"],
                     "round_s": entry["seconds"], "train_phase_s": entry["train_seconds"],
                     "aggregation_s": entry["aggregation_seconds"],
                     "aggregation_cpu_s": entry.get("aggregation_cpu_seconds"),
                     "bytes_in": entry["bytes_in"], "bytes_out": entry["bytes_out"],
                     "participants": len(entry["participants"]),
                     "rejected": len(entry["rejected"]), "failed": len(entry["failed"]),
                     "server_rss_peak_mb": rss.get("peak_mb"),
                     "server_rss_growth_mb": rss.get("growth_mb")})
    return {"rows": rows, "run_s": time.monotonic() - started}


# -- the run -----------------------------------------------------------------------------


def plan(quick: bool) -> list[dict]:
    """(sites, preset, clients, secure) of each simulated federation, cheapest first."""
    if quick:
        return [dict(sites=10, preset="tiny", kind="real", secure=False),
                dict(sites=10, preset="tiny", kind="real", secure=True)]
    return [dict(sites=10, preset="tiny", kind="real", secure=False),
            dict(sites=10, preset="tiny", kind="real", secure=True),
            dict(sites=30, preset="tiny", kind="real", secure=False),
            dict(sites=30, preset="tiny", kind="real", secure=True),
            dict(sites=100, preset="tiny", kind="noised", secure=False),
            dict(sites=100, preset="small", kind="noised", secure=False)]


def table(rows: list[dict]) -> str:
    lines = ["Aggregation alone (fedehr's plain round, in-process noised sites, fedavg)",
             f"{'preset':6} {'sites':>5} {'model MB':>8} {'updates GB':>10} {'round s':>8} "
             f"{'aggr s':>7} {'GB/s':>6} {'aggr cpu s':>10} {'GB/cpu-s':>8} {'RSS +MB':>8} "
             f"{'x model':>7}"]
    for r in (r for r in rows if r["part"] == "aggregation alone"):
        lines.append(f"{r['preset']:6} {r['sites']:>5} {r['model_mb']:>8.1f} "
                     f"{r['updates_gb']:>10.3f} {r['round_s']:>8.2f} {r['aggregation_s']:>7.3f} "
                     f"{r['aggregation_gb_per_s']:>6.2f} {r['aggregation_cpu_s']:>10.3f} "
                     f"{r['aggregation_gb_per_cpu_s']:>8.2f} "
                     f"{r['rss_growth_mb']:>8.1f} {r['rss_growth_x_model']:>7.2f}")
    lines += ["", "Flower simulation engine (Ray), fedehr's ServerApp; per training round",
              f"{'clients':7} {'preset':6} {'sites':>5} {'mode':6} {'rnd':>3} {'round s':>8} "
              f"{'train s':>8} {'aggr s':>7} {'MB in':>8} {'MB out':>8} {'ok':>4} "
              f"{'RSS peak MB':>11} {'RSS +MB':>8}"]
    for r in (r for r in rows if r["part"] == "simulation"):
        growth = r["server_rss_growth_mb"]
        lines.append(f"{r['clients']:7} {r['preset']:6} {r['sites']:>5} {r['mode']:6} "
                     f"{r['round']:>3} {r['round_s']:>8.1f} {r['train_phase_s']:>8.1f} "
                     f"{r['aggregation_s']:>7.3f} {r['bytes_in'] / 1e6:>8.1f} "
                     f"{r['bytes_out'] / 1e6:>8.1f} {r['participants']:>4} "
                     f"{(r['server_rss_peak_mb'] or 0):>11.0f} {(growth or 0):>8.1f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 sites only")
    parser.add_argument("--rounds", type=int, default=1, help="training rounds per run")
    parser.add_argument("--skip-simulation", action="store_true",
                        help="aggregation alone (no Ray needed)")
    parser.add_argument("--reuse-simulation", action="store_true",
                        help="with --skip-simulation: keep the simulation rows of the last "
                             "results file (rerun only the aggregation part)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    from fedehr.shared.data.anchor import fetch_anchor

    anchor = fetch_anchor()
    rows, started = [], time.monotonic()
    with tempfile.TemporaryDirectory(prefix="consortium-") as tmp:
        root = Path(tmp)
        for preset in PRESETS:
            for sites in ((10,) if args.quick else (10, 30, 100)):
                rows.append(in_fresh_process(aggregation_alone, root, preset, sites, anchor))
                print(json.dumps(rows[-1]), flush=True)
        if args.skip_simulation and args.reuse_simulation:
            previous = json.loads((args.out / "consortium_scale.json").read_text())["rows"]
            rows += [r for r in previous if r["part"] == "simulation"]
        if not args.skip_simulation:
            pool = make_pool(root)
            for n, spec in enumerate(plan(args.quick)):
                result = simulate(root / f"sim-{n}", pool, anchor, rounds=args.rounds, **spec)
                rows += result["rows"]
                print(json.dumps(result), flush=True)
    text = table(rows) + f"\n\ntotal {time.monotonic() - started:.0f} s on {os.cpu_count()} cores"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "consortium_scale.json").write_text(json.dumps(
        {"rows": rows, "argv": sys.argv[1:], "max_len": MAX_LEN,
         "pool": {"hospitals": POOL_HOSPITALS, "patients": POOL_PATIENTS}}, indent=1))
    (args.out / "consortium_scale.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "consortium-scale"
    sys.exit(main())
