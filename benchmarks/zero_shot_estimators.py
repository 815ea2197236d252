"""Counted or expected: which zero-shot estimator ranks patients better, on one model.

Zero-shot AUROC of the federated DP model (b) of benchmarks/fed_vs_central.py
sat at chance (0.48-0.53 on mortality) while the k=all probe on the same rows
reached 0.70. With 8 continuations per row and a mean predicted risk of
0.5 %, nearly every row reads "0 of 8": the rows tie, whatever the model knows.
This benchmark scores the same rows with the same continuations (same seed)
twice, once counting the outcome in each continuation (ETHOS' estimator) and
once adding up the model's probability of the outcome at every step
(`zero_shot` "expected"), on the (b) model and the left-out hospital kept by a
fed_vs_central run (`--keep DIR`), beside the probe on those rows.

    .venv/bin/python benchmarks/fed_vs_central.py --data-seed 1 --keep /tmp/fvc/s1 ...
    .venv/bin/python benchmarks/zero_shot_estimators.py /tmp/fvc/s1:1 [/tmp/fvc/s0:0] \\
        [--rows 60] [--samples 8]

Each argument is KEPT_DIR:DATA_SEED. Prints a table; writes
benchmarks/results/zero_shot_estimators.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
RESULTS = Path(__file__).parent / "results" / "zero_shot_estimators.json"
ESTIMATORS = ("counted", "expected")


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kept", nargs="+", help="KEPT_DIR:DATA_SEED of a fed_vs_central run")
    parser.add_argument("--left-out", default="hospital_c")
    parser.add_argument("--rows", type=int, default=60, help="test rows per task (half positive)")
    parser.add_argument("--samples", type=int, default=8, help="continuations per row")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def hospital_of(kept: Path, name: str):
    from fed_vs_central import Hospital

    harmonisation = kept / "hospitals" / f"{name}.harmonisation.yaml"
    return Hospital(name, kept / "hospitals" / name,
                    harmonisation if harmonisation.exists() else None,
                    view=kept / "views" / name)


def one_model(kept: Path, seed: int, args) -> dict:
    from fed_vs_central import evaluate_arm, predictions, zero_shot_vs_probe

    from fedehr.shared.checkpoint import load

    status = json.loads((kept / "fed-b" / "federation" / "status.json").read_text())
    model, vocab, _ = load(status["result"]["checkpoint"])
    left = hospital_of(kept, args.left_out)
    settings = argparse.Namespace(threads=1, probe_seeds=1, zero_shot_rows=args.rows,
                                  zero_shot_samples=args.samples)
    probe = predictions(evaluate_arm(model, vocab, left, settings, kept / "estimators"))
    out = {}
    for estimator in ESTIMATORS:
        settings.zero_shot_estimator = estimator
        out[estimator] = zero_shot_vs_probe(model, vocab, left, probe, settings,
                                            kept / "estimators")
    return {"kept": str(kept), "data_seed": seed, "scores": out}


def main(argv=None) -> int:
    args = parse(argv)
    os.environ.setdefault("POLARS_MAX_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    runs = []
    for item in args.kept:
        folder, _, seed = item.rpartition(":")
        runs.append(one_model(Path(folder).resolve(), int(seed), args))
    print(f"\nZero-shot AUROC of (b) on {args.left_out}, {args.rows} rows x {args.samples} "
          "continuations per task, the same continuations for both estimators")
    print("| data seed | task | counted | expected | probe k=all, same rows | mean p counted |"
          " mean p expected |")
    print("|---|---|---|---|---|---|---|")
    for run in runs:
        counted, expected = run["scores"]["counted"], run["scores"]["expected"]
        for task, c in counted.items():
            e = expected[task]
            if "note" in c:
                continue
            print(f"| {run['data_seed']} | {task} | {c['zero_shot_auroc']} | "
                  f"{e['zero_shot_auroc']} | {c['probe_all_auroc_same_rows']} | "
                  f"{c['mean_probability']} | {e['mean_probability']} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "zero_shot_estimators", "data_seeds": [r["data_seed"] for r in runs],
        "config": {"rows": args.rows, "samples": args.samples, "left_out": args.left_out},
        "runs": runs, "seconds": round(time.perf_counter() - started, 1)}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
