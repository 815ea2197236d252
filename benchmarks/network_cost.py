"""What a federated round costs on the wire, and how a slow hospital link stretches it.

One real federation per configuration across the test network of
tests/network (root only): the SuperLink in the `consortium` namespace at
10.77.0.1, `fedehr site start` in `hospital_a` and `hospital_b`, each behind
its own point-to-point link, TLS and hospital authentication as deployed.
Bytes per site and phase are the kernel's counters of each hospital's link
(`ip -s -j link show`: IP packets, so TCP/TLS/HTTP-2 framing and Flower's
polls and heartbeats count, as a hospital's firewall would see them), read at
every phase change of the run's status file. They are compared with the
model's size (its first checkpoint's weights) and with the server's own count of update bytes.

Runs (each a fresh federation, so ledgers start untouched):
  tiny plain    rounds 1..4; from round 2 on, hospital_b's link is limited
                (tc token-bucket, both directions) to 100, 10, 1 Mbit/s
  tiny secure   SecAgg+, 2 rounds, links unlimited
  small plain   1 round, links unlimited (--small; ~25 MB of weights)
With --compression, instead: tiny plain, tiny float16 (local.update_compression: the
upload) and tiny f16-both (update_compression and download_compression: both ways),
each 2 rounds, hospital_b unlimited then at 1 Mbit/s, side by side.
Prints tables and writes benchmarks/results/network_cost[-compression].{json,txt}.

    sudo .venv/bin/python benchmarks/network_cost.py [--small] [--patients 200]
    sudo .venv/bin/python benchmarks/network_cost.py --compression
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.network

RESULTS = Path(__file__).parent / "results"
HOSPITALS = ["hospital_a", "hospital_b"]
STRAGGLER = "hospital_b"
FEDERATION = {"round_timeout": 600, "min_sites": 2, "vocabulary": {"min_count": 5},
              "model": {"preset": "tiny", "max_len": 48, "notes": False},
              "local": {"steps": 4, "batch_size": 8, "lr": 2e-3},
              "warm_start": {"steps": 5, "batch_size": 8}}


def model_bytes(workdir: Path) -> int:
    """Bytes of the model's weights as the run's first checkpoint holds them."""
    from safetensors.numpy import load_file

    from fedehr.shared.checkpoint.format import WEIGHTS

    weights = load_file(str(workdir / "checkpoints" / "round-0000" / WEIGHTS))
    return sum(w.nbytes for w in weights.values())


def one_run(net, root: Path, hospitals, anchor: Path, *, preset: str, mode: str,
            limits: list[float | None]) -> dict:
    """A federation of len(limits) rounds (mode: plain, secure, float16 or f16-both); round r
    runs with STRAGGLER limited to limits[r-1] Mbit/s (None: unlimited). Returns the phases
    with their link bytes, and the rounds."""
    from tests.network.federation import NetworkFederation, tail

    fed_cfg = {**FEDERATION, "rounds": len(limits), "secure_aggregation": mode == "secure",
               "model": {**FEDERATION["model"], "preset": preset},
               "local": {**FEDERATION["local"],
                         "update_compression": "float16" if mode in ("float16", "f16-both")
                         else "none",
                         "download_compression": "float16" if mode == "f16-both" else "none"}}
    fed = NetworkFederation.create(net, root, hospitals, anchor=anchor, federation=fed_cfg)
    fed.start_server()
    for name in HOSPITALS:
        fed.wait_connected(name, fed.start_site(name))
    status_path = fed.local.config.status_path
    run = fed.launch()
    phases, applied, last, mark = [], 0, None, None
    while True:
        status = _read_json(status_path)
        done = len(status.get("rounds", [])) - 1  # entry 0 is the warm start
        key = (status.get("phase"), int(status.get("round", 0)))
        if key != last and key[0] is not None:  # None: no status file yet
            now = (time.monotonic(), {h: net.link_bytes(h) for h in HOSPITALS})
            if last is not None:
                phases.append(_phase_row(last, mark, now))
            last, mark = key, now
        if applied < len(limits) and key[0] == "training" and done >= applied:
            _set_limit(net, limits[applied])  # before round applied+1 sends anything
            applied += 1
        if key[0] in ("finished", "failed") or run.poll() is not None:
            break
        time.sleep(0.2)
    _set_limit(net, None)
    if status.get("phase") != "finished":
        raise SystemExit(f"the run did not finish: {status.get('message')}\n"
                         f"{tail(fed.root / 'run.log')}")
    return {"preset": preset, "mode": mode, "limits": limits,
            "model_bytes": model_bytes(fed.local.config.workdir),
            "vocab_tokens": status.get("vocab_tokens"),
            "phases": phases, "rounds": status["rounds"][1:]}


def _set_limit(net, mbit: float | None) -> None:
    net.unlimit(STRAGGLER)
    if mbit is not None:
        net.limit(STRAGGLER, mbit)


def _phase_row(key, start, end) -> dict:
    (t0, before), (t1, after) = start, end
    return {"phase": key[0], "round": key[1], "seconds": round(t1 - t0, 1),
            **{f"{h}_{d}": after[h][d] - before[h][d] for h in HOSPITALS for d in ("rx", "tx")}}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def round_rows(run: dict) -> list[dict]:
    """One row per training round: link bytes per site (the phase from the round's start to
    the next round's), the model size, the server's own update count, round time."""
    training = {p["round"]: p for p in run["phases"] if p["phase"] == "training"}
    rows = []
    for entry in run["rounds"]:
        rnd = entry["round"]
        wire = training.get(rnd, {})
        limit = run["limits"][rnd - 1]
        rows.append({
            "run": f"{run['preset']} {run['mode']}", "round": rnd,
            "straggler_limit_mbit": limit, "round_s": entry["seconds"],
            "train_phase_s": entry["train_seconds"],
            "participants": entry["participants"],
            "model_mb": run["model_bytes"] / 1e6,
            **{k: v for k, v in wire.items() if k.startswith("hospital_")},
            "server_counted_update_bytes_in": entry.get("bytes_in"),
            "server_counted_bytes_out": entry.get("bytes_out"),
        })
    return rows


def render(runs: list[dict]) -> str:
    lines = ["Bytes on each hospital's link per training round (kernel counters, MB; the "
             "round's messages: model down, update up, evaluation)",
             f"{'run':<14}{'rnd':>4}{'limit b':>9}{'a rx':>8}{'a tx':>8}{'b rx':>8}"
             f"{'b tx':>8}{'model':>8}{'rx/model':>9}{'round s':>9}{'train s':>9}"]
    for run in runs:
        for row in round_rows(run):
            limit = "-" if row["straggler_limit_mbit"] is None else \
                f"{row['straggler_limit_mbit']:g} Mb"
            mb = {k: row.get(k, 0) / 1e6 for k in ("hospital_a_rx", "hospital_a_tx",
                                                  "hospital_b_rx", "hospital_b_tx")}
            lines.append(
                f"{row['run']:<14}{row['round']:>4}{limit:>9}{mb['hospital_a_rx']:>8.2f}"
                f"{mb['hospital_a_tx']:>8.2f}{mb['hospital_b_rx']:>8.2f}"
                f"{mb['hospital_b_tx']:>8.2f}{row['model_mb']:>8.2f}"
                f"{mb['hospital_a_rx'] / row['model_mb']:>9.2f}{row['round_s']:>9.1f}"
                f"{row['train_phase_s']:>9.1f}")
    lines += ["", "Whole run per phase (MB received / sent by each hospital; seconds)"]
    for run in runs:
        for p in run["phases"]:
            lines.append(f"{run['preset']} {run['mode']:<8}{p['phase']:>12} {p['round']:>2} "
                         f"a {p['hospital_a_rx'] / 1e6:7.2f}/{p['hospital_a_tx'] / 1e6:6.2f} "
                         f"b {p['hospital_b_rx'] / 1e6:7.2f}/{p['hospital_b_tx'] / 1e6:6.2f} "
                         f"{p['seconds']:7.1f} s")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--small", action="store_true", help="also one round of the small "
                        "preset")
    parser.add_argument("--no-secure", action="store_true", help="skip the SecAgg+ run")
    parser.add_argument("--compression", action="store_true", help="only plain against "
                        "float16 updates (local.update_compression) and float16 both ways "
                        "(and download_compression), unlimited and 1 Mbit/s")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("network_cost builds network namespaces: run it as root")
    from fedehr.server.local_federation import HospitalSpec
    from fedehr.shared.data.anchor import fetch_anchor
    from fedehr.shared.data.synth import synthesize
    from tests.network.netns import build_network

    root = Path(tempfile.mkdtemp(prefix="fedehr-network-cost-"))
    hospitals = [HospitalSpec(s.name, Path(s.path), s.harmonisation)
                 for s in synthesize(root / "h", sites=2, patients=args.patients, seed=7)]
    anchor = fetch_anchor()
    plan = [("tiny", "plain", [None, 100, 10, 1])]
    if not args.no_secure:
        plan.append(("tiny", "secure", [None, None]))
    if args.small:
        plan.append(("small", "plain", [None]))
    if args.compression:
        plan = [("tiny", "plain", [None, 1]), ("tiny", "float16", [None, 1]),
                ("tiny", "f16-both", [None, 1])]
    runs, started = [], time.monotonic()
    for i, (preset, mode, limits) in enumerate(plan):
        net = build_network(f"{os.getpid()}b{i}", HOSPITALS)
        try:
            runs.append(one_run(net, root / f"run-{i}", hospitals, anchor, preset=preset,
                                mode=mode, limits=limits))
        finally:
            net.teardown()
        save(runs, args, started)  # after each run: a later failure keeps these
        print(render(runs[-1:]), flush=True)
    print("\n" + render(runs))
    subprocess.run(["rm", "-rf", str(root)], check=False)


def save(runs: list[dict], args, started: float) -> None:
    from fedehr.shared.atomic import write_text

    RESULTS.mkdir(exist_ok=True)
    meta = {"patients": args.patients, "federation": FEDERATION, "straggler": STRAGGLER,
            "wall_seconds": round(time.monotonic() - started), "cores": os.cpu_count(),
            "load_average_at_end": os.getloadavg()}
    name = "network_cost-compression" if args.compression else "network_cost"
    write_text(RESULTS / f"{name}.json",
               json.dumps({"meta": meta, "runs": runs,
                           "rounds": [r for run in runs for r in round_rows(run)]}, indent=2))
    write_text(RESULTS / f"{name}.txt", render(runs) + "\n\n" + conditions(meta) + "\n")


def conditions(meta: dict) -> str:
    load = ", ".join(f"{x:.1f}" for x in meta["load_average_at_end"])
    return (f"{meta['patients']} patients over 2 synthetic hospitals; {meta['cores']} cores, "
            f"load average {load} at the end (other work shared the machine); one run per "
            f"configuration, one round per link rate: round times are single samples; "
            f"{meta['wall_seconds']} s in all.")


if __name__ == "__main__":
    main()
