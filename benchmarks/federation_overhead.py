"""Round wall time of a 3-site federation, split into local training and federation overhead.

Side by side in one run:
  federated   the real thing: TLS SuperLink, three `fedehr site start` daemons,
              Flower's per-message ClientApp processes (`LocalFederation`);
  local only  the same three sites' training rounds, same configuration, run as
              three parallel processes calling the site handler directly, with
              FedAvg in between, no Flower at all.
The overhead per round is the federated training phase minus the local-only
round. Prints a table and writes benchmarks/results/federation_overhead.json.

    .venv/bin/python benchmarks/federation_overhead.py [--rounds 3] [--patients 600]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
import yaml

RESULTS = Path(__file__).parent / "results" / "federation_overhead.json"
FEDERATION = {"round_timeout": 300, "min_sites": 3, "vocabulary": {"min_count": 5},
              "model": {"preset": "tiny", "max_len": 64, "notes": False},
              "local": {"steps": 10, "batch_size": 16, "lr": 2e-3},
              "warm_start": {"steps": 20, "batch_size": 16}}


def federated(root: Path, hospitals, anchor: Path, rounds: int) -> dict:
    from rich.console import Console

    from fedehr.server import runs
    from fedehr.server.local_federation import LocalFederation

    fed = LocalFederation.create(root, hospitals, anchor=anchor,
                                 federation={**FEDERATION, "rounds": rounds},
                                 site={"training": {"threads": 1}})
    try:
        fed.start_all()
        result = runs.watch(fed.config, fed.launch(), Console(quiet=True), timeout=3600)
    finally:
        fed.stop()
    return {"result": result, "fed": fed}


def _train_one(args):
    site_yaml, state, config = args
    from fedehr.client.config import load_site_config
    from fedehr.client.site_handlers import train_round

    started = time.monotonic()
    new_state, metrics = train_round(load_site_config(site_yaml), state, config)
    return new_state, metrics, time.monotonic() - started


def local_only(fed, rounds: int) -> list[float]:
    """The same site rounds without Flower, from the federation's round-0 checkpoint."""
    from fedehr.server.federation import Federation
    from fedehr.shared.checkpoint import load

    model, vocab, _ = load(fed.config.checkpoints_dir / "round-0000")
    server = Federation(fed.config)
    site_yamls = []
    for name, path in fed.site_yamls.items():  # own state dirs: fresh ledgers, no cache
        cfg = yaml.safe_load(path.read_text())
        cfg["state_dir"] = str(fed.root / "local-only" / name)
        copy = fed.root / "local-only" / f"{name}.yaml"
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(yaml.safe_dump(cfg))
        site_yamls.append(copy)
    seconds = []
    # spawn, not fork: a forked child of a process that already ran torch threads can hang
    with ProcessPoolExecutor(len(site_yamls), mp_context=mp.get_context("spawn")) as pool:
        for rnd in range(1, rounds + 1):
            config = server._round_config(rnd, model, vocab)
            config["round-id"] = f"local-only/round-{rnd}"
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            started = time.monotonic()
            outs = list(pool.map(_train_one, [(y, state, config) for y in site_yamls]))
            seconds.append(time.monotonic() - started)
            weights = [o[1]["num-examples"] for o in outs]
            total = sum(weights)
            model.load_state_dict({k: sum(w * o[0][k] for w, o in zip(weights, outs, strict=True))
                                   / total for k in state})
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--patients", type=int, default=600)
    args = parser.parse_args()
    from fedehr.server.local_federation import HospitalSpec
    from fedehr.shared.data.anchor import fetch_anchor
    from fedehr.shared.data.synth import synthesize

    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="fedehr-bench-"))
    try:
        hospitals = [HospitalSpec(s.name, Path(s.path), s.harmonisation)
                     for s in synthesize(root / "h", sites=3, patients=args.patients, seed=3)]
        run = federated(root / "fed", hospitals, fetch_anchor(), args.rounds)
        local = local_only(run["fed"], args.rounds)
        rows = []
        for entry, local_s in zip(run["result"]["history"][1:], local, strict=True):
            site_train = max(entry["site_train_seconds"].values())
            rows.append({"round": entry["round"], "federated_round_s": entry["seconds"],
                         "federated_train_phase_s": entry["train_seconds"],
                         "slowest_site_trainer_s": site_train, "local_only_round_s": local_s,
                         "overhead_s": entry["train_seconds"] - local_s})
        print(f"{'round':>5} {'fed round':>10} {'fed train':>10} {'trainer':>8} "
              f"{'local only':>10} {'overhead':>9} {'ratio':>6}")
        for r in rows:
            print(f"{r['round']:>5} {r['federated_round_s']:>10.1f} "
                  f"{r['federated_train_phase_s']:>10.1f} {r['slowest_site_trainer_s']:>8.1f} "
                  f"{r['local_only_round_s']:>10.1f} {r['overhead_s']:>9.1f} "
                  f"{r['federated_train_phase_s'] / r['local_only_round_s']:>6.2f}")
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({"config": FEDERATION, "patients": args.patients,
                                       "rows": rows}, indent=2))
        print(f"wrote {RESULTS}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
