"""Zero-shot throughput: patients per second against how many continuations share a batch.

Same checkpoint, same prediction times, same seed; only `batch_size` (continuations
generated together) changes, so the answers must be identical and the ratio of the
rates is the gain of batching. Prints a table and writes JSON.

    python benchmarks/zero_shot_throughput.py --checkpoint ckpt --data hospital_a \
        --prompt "death before discharge after admission" --patients 24 --samples 16
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--prompt", default="death before discharge after admission")
    parser.add_argument("--split", default="held_out")
    parser.add_argument("--patients", type=int, default=24, help="prediction times")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--batch-sizes", default="16,128,512")
    parser.add_argument("--out", default="benchmarks/results/zero_shot_throughput.json")
    args = parser.parse_args()

    from fedehr.shared.checkpoint import load
    from fedehr.shared.clinical.concepts import CodeIndex
    from fedehr.shared.clinical.prompt import parse_prompt, resolve_prompt
    from fedehr.shared.clinical.query import outcome_from_task
    from fedehr.shared.clinical.zero_shot import open_dataset, predict_detailed

    dataset = open_dataset(args.data)
    model, vocab, _ = load(args.checkpoint)
    resolved = resolve_prompt(parse_prompt(args.prompt), CodeIndex.for_dataset(dataset.codes()))
    outcome = outcome_from_task(resolved.task_config())
    labels = (dataset.scan(args.split)
              .filter(pl.col("code").is_in(list(resolved.index.codes)))
              .select("subject_id", pl.col("time").alias("prediction_time"))
              .unique(maintain_order=True).sort("subject_id", "prediction_time")
              .head(args.patients).collect())
    rows, reference = [], None
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        started = time.perf_counter()
        result = predict_detailed(model, vocab, dataset, labels, outcome, samples=args.samples,
                                  seed=0, batch_size=batch)
        total = time.perf_counter() - started
        sim = result.simulation
        # the same tokens are drawn; each one's chance differs by float rounding only
        same = reference is None or np.allclose(reference, sim.per_sample, rtol=1e-6,
                                                 atol=1e-9)
        reference = sim.per_sample if reference is None else reference
        rows.append({"batch_size": batch, "patients": labels.height, "samples": args.samples,
                     "generation_s": round(sim.seconds, 2), "end_to_end_s": round(total, 2),
                     "tokens": sim.generated_tokens,
                     "patients_per_s": round(labels.height / sim.seconds, 3),
                     "tokens_per_s": round(sim.generated_tokens / sim.seconds, 1),
                     "same_answers_as_first": bool(same)})
    base = rows[0]["patients_per_s"]
    print(f"zero-shot throughput: {args.prompt!r}, {labels.height} prediction times, "
          f"K={args.samples}, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'batch':>6} {'gen s':>8} {'tokens':>8} {'tok/s':>8} {'patients/s':>11} "
          f"{'x first':>8} {'same':>5}")
    for r in rows:
        print(f"{r['batch_size']:>6} {r['generation_s']:>8} {r['tokens']:>8} "
              f"{r['tokens_per_s']:>8} {r['patients_per_s']:>11} "
              f"{r['patients_per_s'] / base:>8.2f} {str(r['same_answers_as_first']):>5}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"prompt": args.prompt, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
