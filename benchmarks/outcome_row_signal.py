"""Why zero-shot mortality stays at chance under DP: what reaches the death token's output row.

Zero-shot mortality asks the model's output row of MEDS_DEATH (`lm_head.weight[death]`)
how likely death is; under DP-SGD that row learns only from the patients whose
window holds a death, and only through the share of each patient's clipped
gradient that lands on it, while every step adds N(0, (sigma C)^2) noise to each
of its coordinates. This measures both on the synthetic world of
benchmarks/dp_recipe_sweep.py after its warm start (the federation's starting
point), at the tuned recipe (expected batch 128, 20 steps x 4 rounds, clip 1.0,
epsilon 8 less the vocabulary release):

    windows with death   share of a site's training windows with a death target
    death-row share      |grad of the death row| / |whole per-example gradient|,
                         for the windows with a death target (median)
    signal / noise       over all the site's planned steps: the death row's summed
                         clipped gradient (taken as perfectly aligned, an upper bound)
                         over the norm of the noise summed into that row; also for a
                         site with 10x and 100x the patients at the same batch (the
                         noise multiplier falls with the sampling rate)

`--death-weight w` counts the death target w times in the example's mean loss
(the other targets once), to see how far weighting moves the signal; the noise and the
privacy cost do not change, since each example's gradient is still clipped to C.

    .venv/bin/python benchmarks/outcome_row_signal.py [--data-seed 0] [--death-weight 1,10,50]

Prints a table and writes benchmarks/results/outcome_row_signal.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
RESULTS = Path(__file__).parent / "results" / "outcome_row_signal.json"
BATCH, STEPS, ROUNDS, CLIP = 128, 20, 4, 1.0  # dp_recipe_sweep's batch128-lr4x-warm-es
SCALES = (10, 100)  # sites with 10x and 100x the patients (same windows with death, same batch)


def row_shares(model, windows, idx, death: int, weight: float):
    """Per example: (whole gradient norm, death output row's gradient norm), with the death
    target counted `weight` times in the example's loss."""
    import torch
    from dp_recipe_sweep import weight_death

    from fedehr.shared.tokenizer.batch import Batch

    weight_death(model, death, weight)
    out = []
    for i in idx:
        fields = [f.unsqueeze(0) for f in windows[int(i)]]
        model.zero_grad(set_to_none=True)
        model.per_example_loss(Batch(*fields))[0].backward()
        total = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters()
                               if p.grad is not None))
        out.append((float(total), float(model.lm_head.weight.grad[death].norm())))
    del model.per_example_loss
    return out


def main(argv=None) -> int:
    import numpy as np
    from dp_recipe_sweep import world_arguments

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    world_arguments(parser)
    parser.add_argument("--death-weight", default="1,10,50",
                        help="comma-separated weights of a death target in the loss")
    parser.add_argument("--examples", type=int, default=48,
                        help="windows with a death target measured per site")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    os.environ.setdefault("POLARS_MAX_THREADS", "1")
    import torch
    from dp_recipe_sweep import EPSILON, VOCAB_EPSILON, build_world

    from fedehr.shared.data import schema as S
    from fedehr.shared.privacy.accounting import noise_multiplier_for
    from fedehr.shared.training import train_early_stopped

    torch.set_num_threads(1)
    weights = [float(w) for w in args.death_weight.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="fedehr-outcome-row-") as tmp:
        t0 = time.perf_counter()
        world = build_world(Path(tmp), args)
        death = world["vocab"].id(S.DEATH_CODE)
        torch.manual_seed(0)
        model = world["initial"]()
        train_early_stopped(model, world["anchor_train"], world["anchor_tuning"],
                            max_steps=300, batch_size=32, lr=2e-3)
        model.eval()  # no dropout in the measurement; gradients still flow
        print(f"world and warm start in {time.perf_counter() - t0:.0f} s", flush=True)
        d_model = model.config.d_model
        for name, d in world["data"].items():
            windows = d.train
            has_death = np.array([bool((windows[i][0][1:] == death).any())
                                  for i in range(len(windows))])
            q = min(BATCH, d.patients) / d.patients
            sigma = noise_multiplier_for(EPSILON - VOCAB_EPSILON, delta=1e-5, sample_rate=q,
                                         steps=ROUNDS * STEPS)
            steps = ROUNDS * STEPS
            rng = np.random.default_rng(0)
            idx = rng.choice(np.flatnonzero(has_death),
                             min(args.examples, int(has_death.sum())), replace=False)
            for w in weights:
                shares = row_shares(model, windows, idx, death, w)
                clipped = np.array([g * min(1.0, CLIP / t) for t, g in shares])
                # per step: q * (windows with death) examples each add their clipped row
                # gradient; the row gets N(0, (sigma C)^2) per coordinate
                signal = float(steps * q * has_death.sum() * np.mean(clipped))
                noise = sigma * CLIP * np.sqrt(d_model * steps)
                # a larger site at the same batch: the same signal per step, less noise
                scaled = {f"x{k}": round(signal / (noise_multiplier_for(
                    EPSILON - VOCAB_EPSILON, delta=1e-5, sample_rate=q / k, steps=steps)
                    * CLIP * np.sqrt(d_model * steps)), 3) for k in SCALES}
                row = {"site": name, "death_weight": w, "windows": len(windows),
                       "windows_with_death": round(float(has_death.mean()), 4),
                       "noise_multiplier": round(sigma, 3),
                       "death_row_share": round(float(np.median([g / t for t, g in shares])), 4),
                       "clipped_row_norm": round(float(np.mean(clipped)), 4),
                       "signal": round(signal, 2), "noise": round(float(noise), 2),
                       "signal_to_noise": round(signal / float(noise), 3),
                       "signal_to_noise_larger_site": scaled}
                rows.append(row)
                print(f"{name} w={w:g}: {row}", flush=True)
    print("\n| site | death weight | windows with death | death-row share | signal / noise "
          "(all steps) | at 10x patients | at 100x |\n|---|---|---|---|---|---|---|")
    for r in rows:
        larger = r["signal_to_noise_larger_site"]
        print(f"| {r['site']} | {r['death_weight']:g} | {100 * r['windows_with_death']:.1f}% | "
              f"{r['death_row_share']:.3f} | {r['signal_to_noise']:.2f} | {larger['x10']:.2f} | "
              f"{larger['x100']:.2f} |")
    args.out.write_text(json.dumps({"benchmark": "outcome_row_signal",
                                    "data_seed": args.data_seed, "recipe": {
                                        "batch": BATCH, "steps": STEPS, "rounds": ROUNDS,
                                        "clip": CLIP}, "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
