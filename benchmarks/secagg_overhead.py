"""What secure aggregation (SecAgg+) costs per round: the same 3-site federation, plain vs secure.

Side by side in one run, alternating plain, secure, plain, secure, ...: each
run is a fresh `LocalFederation` (TLS SuperLink, three `fedehr site start`
daemons, DP-SGD at every site, same synthetic hospitals, same settings), so
each starts with untouched privacy ledgers. Per training round it reports the
round's wall time, its training phase (send -> aggregate), bytes received by
the server, and for secure rounds the four SecAgg+ exchanges. Also prints the
quantization error SecAgg+ adds at these settings: updates vs whole weights.
Prints tables and writes benchmarks/results/secagg_overhead.json.

    .venv/bin/python benchmarks/secagg_overhead.py [--repeats 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "secagg_overhead.json"
FEDERATION = {"round_timeout": 300, "min_sites": 3, "vocabulary": {"min_count": 5},
              "model": {"preset": "tiny", "max_len": 48},
              "local": {"steps": 4, "batch_size": 8, "lr": 2e-3},
              "warm_start": {"steps": 5, "batch_size": 8}}


def one_run(root: Path, hospitals, anchor: Path, *, secure: bool, rounds: int) -> list[dict]:
    from rich.console import Console

    from fedehr.server import runs
    from fedehr.server.local_federation import LocalFederation

    fed = LocalFederation.create(root, hospitals, anchor=anchor,
                                 federation={**FEDERATION, "rounds": rounds,
                                             "secure_aggregation": secure},
                                 site={"training": {"threads": 1}})
    try:
        fed.start_all()
        result = runs.watch(fed.config, fed.launch(), Console(quiet=True), timeout=1800)
    finally:
        fed.stop()
    rows = []
    for entry in result["history"][1:]:
        sa = entry.get("secure_aggregation", {})
        rows.append({"mode": "secure" if secure else "plain", "round": entry["round"],
                     "round_s": entry["seconds"], "train_phase_s": entry["train_seconds"],
                     "slowest_site_trainer_s": max(entry["site_train_seconds"].values()),
                     "server_aggregation_s": entry["aggregation_seconds"],
                     "bytes_in": entry["bytes_in"], "stage_s": sa.get("stage_seconds"),
                     "clipped_fraction": sa.get("clipped_fraction")})
    return rows


def quantization_error(weights: dict[str, np.ndarray], patients: int = 100) -> list[dict]:
    """Max error SecAgg+'s quantization adds to one site's values, as fedehr configures it.

    Flower clips the weighted values (value x patients / max_weight) to the
    clipping range, so a site's own range is clip x max_weight / patients.
    Sending updates: clip = 4 x lr x steps (fedehr's default). Sending whole
    weights would need clip = max |weight| so the largest site is not clipped.
    max_weight: 1,000,000 in a run's first round, then twice the largest site.
    """
    from flwr.common.secure_aggregation.quantization import dequantize, quantize

    from fedehr.server.secure_rounds import derived_max_weight, quantization_range

    flat = np.concatenate([w.ravel() for w in weights.values()]).astype(np.float64)
    rng = np.random.default_rng(0)
    lr, steps = FEDERATION["local"]["lr"], FEDERATION["local"]["steps"]
    update = rng.normal(0, lr, flat.size).clip(-lr * steps, lr * steps)
    rows = []
    for q_label, q in (("flower default 2^22", 2**22), ("fedehr 2^30", quantization_range(3))):
        for w_label, max_weight in (("first round 10^6", 1_000_000),
                                    ("derived", derived_max_weight([patients]))):
            ratio = patients / max_weight
            for what, values, clip in (("weights", flat, float(np.abs(flat).max())),
                                       ("update", update, 4 * lr * steps)):
                (qv,) = quantize([values * ratio], clip, q)
                (back,) = dequantize([qv], clip, q)
                rows.append({"quantization_range": q_label, "max_weight": w_label,
                             "sent": what, "clipping_range": clip, "patients": patients,
                             "max_abs_error": float(np.abs(back / ratio - values).max())})
    return rows


def fresh_weights() -> dict[str, np.ndarray]:
    """A freshly initialised tiny model of the benchmark's size (vocabulary ~2,650 tokens)."""
    import torch

    from fedehr.shared.model import EHRModel, ModelConfig

    torch.manual_seed(0)
    model = EHRModel(ModelConfig.preset("tiny", 2650, max_len=48, note_dim=384, image_dim=32,
                                        pro_dim=5))
    return {k: v.numpy() for k, v in model.state_dict().items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--quantization-only", action="store_true",
                        help="recompute only the quantization table into the results JSON")
    args = parser.parse_args()
    if args.quantization_only:
        data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        data["quantization_error"] = quantization_error(fresh_weights())
        _print_errors(data["quantization_error"])
        RESULTS.write_text(json.dumps(data, indent=2))
        return
    from safetensors.numpy import load_file

    from fedehr.server.local_federation import HospitalSpec
    from fedehr.shared.checkpoint.format import WEIGHTS
    from fedehr.shared.data.anchor import fetch_anchor
    from fedehr.shared.data.synth import synthesize

    root = Path(tempfile.mkdtemp(prefix="fedehr-secagg-bench-"))
    try:
        hospitals = [HospitalSpec(s.name, Path(s.path), s.harmonisation)
                     for s in synthesize(root / "h", sites=3, patients=args.patients, seed=7)]
        anchor = fetch_anchor()
        rows = []
        for i in range(args.repeats):
            for secure in (False, True):
                run_root = root / f"{'secure' if secure else 'plain'}-{i}"
                rows += one_run(run_root, hospitals, anchor, secure=secure, rounds=args.rounds)
                print(f"run {i} {'secure' if secure else 'plain'}: "
                      f"{[r['round_s'] for r in rows[-args.rounds:]]} s per round", flush=True)
        weights = load_file(str(root / "plain-0" / "federation" / "checkpoints" /
                                "round-0000" / WEIGHTS))
        errors = quantization_error(weights)
        summary = _summary(rows)
        _print(rows, summary, errors)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({"config": FEDERATION, "patients": args.patients,
                                       "rows": rows, "summary": summary,
                                       "quantization_error": errors}, indent=2))
        print(f"wrote {RESULTS}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _summary(rows: list[dict]) -> dict:
    out = {}
    for mode in ("plain", "secure"):
        mine = [r for r in rows if r["mode"] == mode]
        out[mode] = {k: statistics.median(r[k] for r in mine)
                     for k in ("round_s", "train_phase_s", "slowest_site_trainer_s",
                               "server_aggregation_s", "bytes_in")}
    out["ratio"] = {k: out["secure"][k] / out["plain"][k] for k in out["plain"]
                    if out["plain"][k]}
    return out


def _print(rows, summary, errors) -> None:
    print(f"\n{'mode':>6} {'round':>5} {'round s':>8} {'train s':>8} {'trainer s':>9} "
          f"{'agg s':>6} {'MB in':>6}  SecAgg+ exchanges s")
    for r in rows:
        print(f"{r['mode']:>6} {r['round']:>5} {r['round_s']:>8.1f} {r['train_phase_s']:>8.1f} "
              f"{r['slowest_site_trainer_s']:>9.1f} {r['server_aggregation_s']:>6.2f} "
              f"{r['bytes_in'] / 1e6:>6.1f}  {r['stage_s'] or ''}")
    print("\nmedians      plain   secure   secure/plain")
    for k in summary["plain"]:
        print(f"{k:<22} {summary['plain'][k]:>10.2f} {summary['secure'][k]:>10.2f} "
              f"{summary['ratio'].get(k, float('nan')):>8.2f}")
    _print_errors(errors)


def _print_errors(errors) -> None:
    print(f"\n{'quantization range':<20} {'max_weight':<17} {'sent':>8} {'clip':>7} "
          f"{'max error':>10}")
    for e in errors:
        print(f"{e['quantization_range']:<20} {e['max_weight']:<17} {e['sent']:>8} "
              f"{e['clipping_range']:>7.3g} {e['max_abs_error']:>10.2e}")


if __name__ == "__main__":
    main()
