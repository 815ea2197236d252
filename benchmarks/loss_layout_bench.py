"""Step time of the next-token loss over flat rows vs over a strided class axis.

`EHRModel.per_example_loss` used to call cross_entropy on logits transposed to
[B, V, T]; it now passes flat [B*T, V] rows (`transformer.token_losses`). Both give
the same losses. This times one training step (forward, loss, backward, optimizer) of
each, for the central trainer's batch (32, AdamW) and for a DP-SGD step (batch 128,
Opacus per-example gradients, clipping and noise), on the same batches in alternating
repeats so that machine load hits both alike.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/loss_layout_bench.py [--repeats 5]

Prints a table and writes benchmarks/results/loss_layout.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer

from fedehr.shared.model import EHRModel, ModelConfig, transformer

sys.path.insert(0, str(Path(__file__).parent))
from dp_throughput_bench import make_batches  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "loss_layout.json"
VOCAB = 2167  # the dp_recipe_sweep world's vocabulary (data seed 0)
FLAT = transformer.token_losses


def strided(logits, targets, **kwargs):
    """The former layout: classes on the middle axis."""
    return F.cross_entropy(logits.transpose(1, 2), targets, reduction="none", **kwargs)


def step_fn(model, *, dp: bool, batch_size: int):
    model.per_example_grads = True  # both layouts over every position, as before
    if dp:
        module = GradSampleModule(model)
        opt = DPOptimizer(torch.optim.AdamW(module.parameters(), lr=1e-3), noise_multiplier=1.0,
                          max_grad_norm=1.0, expected_batch_size=batch_size)
    else:
        module, opt = model, torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(batch):
        opt.zero_grad(set_to_none=True)
        losses = module._module.per_example_loss(batch) if dp else model.per_example_loss(batch)
        (losses.sum() / batch_size if dp else losses.mean()).backward()
        opt.step()
    return step


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per repeat")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = ModelConfig.preset("tiny", VOCAB, max_len=128, note_dim=0, image_dim=0, pro_dim=0)
    rows = []
    for label, dp, batch_size in (("central (AdamW, batch 32)", False, 32),
                                  ("DP-SGD (Opacus, batch 128)", True, 128)):
        torch.manual_seed(0)
        base = EHRModel(config)
        batches = make_batches(config, args.steps, batch_size, 128)
        steps = {name: step_fn(copy.deepcopy(base), dp=dp, batch_size=batch_size)
                 for name in ("strided", "flat")}
        times = {name: [] for name in steps}
        for _ in range(args.repeats):
            for name, fn in steps.items():
                transformer.token_losses = FLAT if name == "flat" else strided
                t0 = time.perf_counter()
                for b in batches:
                    fn(b)
                times[name].append((time.perf_counter() - t0) / len(batches))
        transformer.token_losses = FLAT
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append({"step": label, "strided_s": round(med["strided"], 4),
                     "flat_s": round(med["flat"], 4),
                     "speedup": round(med["strided"] / med["flat"], 2)})
    print("| step | strided [B, V, T] (s) | flat [B*T, V] (s) | speed-up |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['step']} | {r['strided_s']:.3f} | {r['flat_s']:.3f} | {r['speedup']:.2f}x |")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"benchmark": "loss_layout", "vocab": VOCAB,
                                   "repeats": args.repeats, "rows": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
