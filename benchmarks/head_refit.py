"""Does the output head, refit on the frozen DP model, make zero-shot answers real? (issue 12)

Zero-shot answers of the federated DP model sit at chance (target 5) while a
central model of the same size answers mortality at 0.78-0.89
(dp_recipe_sweep.txt, central-es). The death token's output row gets a
signal/noise of 0.02-0.03 over a whole DP run (outcome_row_signal.py): the head
takes 3 % of each patient's clipped gradient and a death target is one of about
100 targets in a window. Refitting only the head, with the rest of the model
frozen, gives the head the whole clipping budget and makes each step cheap. This
script measures, on models saved by `dp_recipe_sweep.py --save-models`:

    as-is           the saved model
    refit-public    the head refit without DP on the sites' training windows (not
                    private: the upper bound of what a refit head can do on these
                    frozen features), early-stopped on the sites' tuning loss

There is no DP refit arm: a private refit cannot do better than this upper bound,
and the upper bound did not lift zero-shot (benchmarks/results/dp_recipe_sweep.txt).

Scores: the sites' tuning loss and zero-shot AUROC on the sweep's balanced draw
of tuning rows (never test rows). Everything else is the sweep's world.

    .venv/bin/python benchmarks/head_refit.py --model DIR/recipe-seed0.pt --data-seed 0
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def freeze_all_but_head(model) -> None:
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("lm_head."))


def refit_public(model, world, *, lr: float, max_steps: int) -> dict:
    from torch.utils.data import ConcatDataset

    from fedehr.shared.training import train_early_stopped

    freeze_all_but_head(model)
    run = train_early_stopped(
        model, ConcatDataset([d.train for d in world["data"].values()]),
        ConcatDataset([d.tuning for d in world["data"].values()]),
        max_steps=max_steps, batch_size=64, lr=lr, eval_every=max(1, max_steps // 8),
        patience=2)
    return {"best_step": run.best_step, "steps_run": run.steps}


def score(model, world, args) -> dict:
    from dp_recipe_sweep import zero_shot_aurocs

    from fedehr.shared.training import evaluate as eval_loss

    losses = {name: round(eval_loss(model, d.tuning, batch_size=64)[0], 4)
              for name, d in world["data"].items()}
    return {"tuning_loss": losses,
            "mean_tuning_loss": round(sum(losses.values()) / len(losses), 4),
            "zero_shot": zero_shot_aurocs(model, world, rows=args.zero_shot_rows,
                                          samples=args.zero_shot_samples)}


def main(argv=None) -> int:
    import torch
    from dp_recipe_sweep import build_world, world_arguments

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    world_arguments(parser)
    parser.add_argument("--model", type=Path, required=True,
                        help="weights saved by dp_recipe_sweep.py --save-models")
    parser.add_argument("--arms", default="as-is,refit-public")
    parser.add_argument("--zero-shot-rows", type=int, default=100)
    parser.add_argument("--zero-shot-samples", type=int, default=8)
    parser.add_argument("--public-lr", type=float, default=2e-3)
    parser.add_argument("--public-steps", type=int, default=960)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory(prefix="fedehr-head-refit-") as tmp:
        world = build_world(Path(tmp), args)
        for arm in args.arms.split(","):
            model = world["initial"](0)
            model.load_state_dict(torch.load(args.model))
            t0, extra = time.perf_counter(), {}
            if arm == "refit-public":
                extra = refit_public(model, world, lr=args.public_lr,
                                     max_steps=args.public_steps)
            elif arm != "as-is":
                parser.error(f"unknown arm {arm!r}")
            row = {"arm": arm, "model": str(args.model), "data_seed": args.data_seed,
                   "seconds_refit": round(time.perf_counter() - t0, 1), **extra,
                   **score(model, world, args)}
            rows.append(row)
            zs = row["zero_shot"]
            print(f"{arm:16s} loss {row['mean_tuning_loss']:.3f}  zero-shot mortality "
                  f"{zs['mean/mortality']:.3f}  long stay {zs['mean/long_los']:.3f}  "
                  f"{row['seconds_refit']:.0f}s  {extra}", flush=True)
            args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                            "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
