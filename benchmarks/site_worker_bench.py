"""Round wall time with Flower's per-message `flwr-clientapp` vs the long-lived site worker.

Side by side in one run, alternating (subprocess, worker, subprocess, worker, ...):
the same 3-site TLS federation (same synthetic hospitals, same anchor, tiny
model, 3 DP rounds) started by `LocalFederation`, once with
`fedehr site start --isolation subprocess` (Flower's default: a fresh
flwr-clientapp process per message, which imports torch, Opacus and fedehr
again) and once with the default site worker. Every site has a secret noise
seed file (privacy.noise_seed_file), the same in both modes, so both modes
must end with bit-identical global weights.

Per round it reports the server's wall time, and the overhead per message
phase as the server sees it: train phase minus the slowest site's trainer
time (one train message per site, in parallel), and the evaluate phase (one
evaluate message per site; tiny held-out sets, so nearly all overhead).
Prints a table and writes benchmarks/results/site_worker.json.

    .venv/bin/python benchmarks/site_worker_bench.py [--repeats 2] [--rounds 3] [--patients 600]
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import shutil
import statistics
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "site_worker.json"
FEDERATION = {"round_timeout": 300, "min_sites": 3, "vocabulary": {"min_count": 5},
              "model": {"preset": "tiny", "max_len": 64, "notes": False},
              "local": {"steps": 10, "batch_size": 16, "lr": 2e-3},
              "warm_start": {"steps": 20, "batch_size": 16}}
MODES = ("subprocess", "worker")
TASK_LINE = re.compile(r"task \d+ \((\w+)\) completed in ([\d.]+) s")


def one_run(root: Path, hospitals, anchor: Path, rounds: int, mode: str,
            seed_files: dict[str, Path]) -> dict:
    from rich.console import Console

    from fedehr.server import runs
    from fedehr.server.local_federation import LocalFederation

    fed = LocalFederation.create(root, hospitals, anchor=anchor,
                                 federation={**FEDERATION, "rounds": rounds},
                                 site={"training": {"threads": 1}})
    fed.isolation = mode
    for name, path in fed.site_yamls.items():  # the same secret seed per site in both modes
        _set_seed_file(path, seed_files[name])
    started = time.monotonic()
    try:
        fed.start_all()
        result = runs.watch(fed.config, fed.launch(), Console(quiet=True), timeout=3600)
    finally:
        fed.stop()
    total = time.monotonic() - started
    rows = []
    for entry in result["history"][1:]:
        trainer = max(entry["site_train_seconds"].values())
        rows.append({"round": entry["round"], "round_s": entry["seconds"],
                     "train_phase_s": entry["train_seconds"], "slowest_trainer_s": trainer,
                     "train_overhead_s": entry["train_seconds"] - trainer,
                     "evaluate_phase_s": entry["seconds"] - entry["train_seconds"]})
    return {"mode": mode, "rows": rows, "total_s": total, "weights": _final_weights(fed, rounds),
            "worker_tasks": _worker_tasks(fed) if mode == "worker" else {}}


def _set_seed_file(path: Path, seed_file: Path) -> None:
    import yaml

    site = yaml.safe_load(path.read_text())
    site.setdefault("privacy", {})["noise_seed_file"] = str(seed_file)
    path.write_text(yaml.safe_dump(site, sort_keys=False))


def _final_weights(fed, rounds: int) -> dict:
    from fedehr.shared.checkpoint import load

    model, _, _ = load(fed.config.checkpoints_dir / f"round-{rounds:04d}")
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _worker_tasks(fed) -> dict[str, list[float]]:
    """Seconds each message spent inside the site workers, by message type."""
    out: dict[str, list[float]] = {}
    for log in (fed.root / "site-state").glob("*/logs/worker.log"):
        for kind, seconds in TASK_LINE.findall(log.read_text()):
            out.setdefault(kind, []).append(float(seconds))
    return out


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for run in runs for r in run["rows"])


def report(runs: list[dict]) -> dict:
    import torch

    by_mode = {m: [r for r in runs if r["mode"] == m] for m in MODES}
    print(f"{'run':>3} {'mode':>10} {'round':>5} {'round s':>8} {'train s':>8} "
          f"{'trainer s':>9} {'train ovh':>9} {'eval s':>7}")
    for i, run in enumerate(runs):
        for r in run["rows"]:
            print(f"{i:>3} {run['mode']:>10} {r['round']:>5} {r['round_s']:>8.1f} "
                  f"{r['train_phase_s']:>8.1f} {r['slowest_trainer_s']:>9.2f} "
                  f"{r['train_overhead_s']:>9.1f} {r['evaluate_phase_s']:>7.1f}")
    summary = {m: {k: _median(by_mode[m], k) for k in
                   ("round_s", "train_overhead_s", "evaluate_phase_s", "slowest_trainer_s")}
               for m in MODES}
    reference = runs[0]["weights"]
    diffs = [max(float((run["weights"][k] - reference[k]).abs().max()) for k in reference)
             for run in runs]
    identical = all(all(torch.equal(run["weights"][k], reference[k]) for k in reference)
                    for run in runs)
    saved = summary["subprocess"]["round_s"] - summary["worker"]["round_s"]
    print()
    print(f"{'median per round':>24} {'subprocess':>11} {'worker':>8} {'saved':>7}")
    for key, label in (("round_s", "round wall time s"),
                       ("train_overhead_s", "train message overhead s"),
                       ("evaluate_phase_s", "evaluate message s"),
                       ("slowest_trainer_s", "trainer (DP steps) s")):
        a, b = summary["subprocess"][key], summary["worker"][key]
        print(f"{label:>24} {a:>11.2f} {b:>8.2f} {a - b:>7.2f}")
    tasks = {}
    for run in by_mode["worker"]:
        for kind, secs in run["worker_tasks"].items():
            tasks.setdefault(kind, []).extend(secs)
    for kind, secs in sorted(tasks.items()):
        print(f"inside the worker: {kind} message median {statistics.median(secs):.2f} s "
              f"({len(secs)} messages)")
    print(f"final global weights identical across all {len(runs)} runs: {identical} "
          f"(max |diff| per run vs run 0: {', '.join(f'{d:.2e}' for d in diffs)})")
    print(f"per round saved by the worker (median): {saved:.1f} s (target >= 5 s)")
    return {"summary": summary, "saved_per_round_s": saved, "weights_identical": identical,
            "max_abs_weight_diff": diffs, "worker_task_seconds": tasks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="runs per mode, alternated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--patients", type=int, default=600)
    args = parser.parse_args()
    from fedehr.server.local_federation import HospitalSpec
    from fedehr.shared.data.anchor import fetch_anchor
    from fedehr.shared.data.synth import synthesize

    root = Path(tempfile.mkdtemp(prefix="fedehr-worker-bench-"))
    try:
        hospitals = [HospitalSpec(s.name, Path(s.path), s.harmonisation)
                     for s in synthesize(root / "h", sites=3, patients=args.patients, seed=3)]
        seeds = {}
        for h in hospitals:
            seeds[h.name] = root / "seeds" / h.name
            seeds[h.name].parent.mkdir(parents=True, exist_ok=True)
            seeds[h.name].write_bytes(secrets.token_bytes(32))
        anchor = fetch_anchor()
        runs = []
        for i in range(args.repeats):
            for mode in MODES:
                print(f"run {len(runs)}: {mode} ...", flush=True)
                runs.append(one_run(root / f"run-{i}-{mode}", hospitals, anchor, args.rounds,
                                    mode, seeds))
        summary = report(runs)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({
            "config": FEDERATION, "rounds": args.rounds, "patients": args.patients,
            "order": [r["mode"] for r in runs],
            "runs": [{"mode": r["mode"], "rows": r["rows"], "total_s": r["total_s"]}
                     for r in runs], **summary}, indent=2))
        print(f"wrote {RESULTS}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
