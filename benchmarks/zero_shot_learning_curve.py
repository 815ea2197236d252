"""How much training do zero-shot answers need? A central run scored as it learns (issue 12).

(a)'s recipe trained to early stopping answers mortality zero-shot at 0.78-0.89
AUROC on tuning rows (dp_recipe_sweep.txt, central-es), while the federated DP
model sits at chance, also with its output head refit without DP to a lower
loss (head_refit.py). This script trains the central recipe once (the sweep's
world, the sites' training windows pooled, batch 32, AdamW at 2e-3, the sweep's
initial weights) and, at each checkpoint, scores the sites' tuning loss, the
k=all probe and zero-shot AUROC on the sweep's balanced draw of tuning rows:
at which loss, after how many steps, do zero-shot answers leave chance?

    .venv/bin/python benchmarks/zero_shot_learning_curve.py --data-seed 0 --out F.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main(argv=None) -> int:
    import torch
    from dp_recipe_sweep import build_world, probe_aurocs, world_arguments, zero_shot_aurocs
    from torch.utils.data import ConcatDataset, DataLoader

    from fedehr.shared.tokenizer.batch import Batch
    from fedehr.shared.training import evaluate as eval_loss
    from fedehr.shared.training.trainer import forever

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    world_arguments(parser)
    parser.add_argument("--checkpoints", default="0,60,120,240,480,960,1920",
                        help="steps after which to score (comma-separated, increasing)")
    parser.add_argument("--zero-shot-rows", type=int, default=100)
    parser.add_argument("--zero-shot-samples", type=int, default=8)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--save", type=Path, metavar="PT",
                        help="also save the weights of the last checkpoint here")
    args = parser.parse_args(argv)
    checkpoints = [int(s) for s in args.checkpoints.split(",")]

    rows = []
    with tempfile.TemporaryDirectory(prefix="fedehr-zs-curve-") as tmp:
        world = build_world(Path(tmp), args)
        torch.manual_seed(0)
        model = world["initial"](0)
        pooled = ConcatDataset([d.train for d in world["data"].values()])
        batches = forever(DataLoader(pooled, batch_size=32, shuffle=True,
                                     generator=torch.Generator().manual_seed(0)))
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
        step, t0 = 0, time.perf_counter()
        for target in checkpoints:
            model.train()
            while step < target:
                loss = model.per_example_loss(Batch.from_tuple(next(batches))).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
            losses = [eval_loss(model, d.tuning, batch_size=64)[0]
                      for d in world["data"].values()]
            row = {"step": step, "seconds": round(time.perf_counter() - t0, 1),
                   "mean_tuning_loss": round(sum(losses) / len(losses), 4),
                   "probe_last_mean": probe_aurocs(model, world)["probe_last_mean"]["mean"],
                   "zero_shot": zero_shot_aurocs(model, world, rows=args.zero_shot_rows,
                                                 samples=args.zero_shot_samples)}
            rows.append(row)
            print(f"step {step:5d}  loss {row['mean_tuning_loss']:.3f}  probe "
                  f"{row['probe_last_mean']:.3f}  zero-shot mortality "
                  f"{row['zero_shot']['mean/mortality']:.3f}  long stay "
                  f"{row['zero_shot']['mean/long_los']:.3f}  {row['seconds']:.0f}s", flush=True)
            args.out.write_text(json.dumps({"data_seed": args.data_seed, "rows": rows},
                                           indent=1))
        if args.save:
            torch.save(model.state_dict(), args.save)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
