"""What the cuts in a site's training round save, each timed against the code before it.

1. `EHRModel.per_example_loss` runs the output head (a d_model x vocabulary matmul,
   about half of a step's work) and the cross-entropy over the non-pad targets only,
   unless `per_example_grads` is set (the DP trainer: Opacus' hooks need batch-first
   inputs). The losses are the same. Timed for a central training step (batch 32,
   AdamW: fed_vs_central's (a) and the anchor warm start) and an evaluation batch (no
   gradient: the anchor and tuning losses).
2. The DP trainer's Opacus hooks see the summed per-example losses instead of their
   mean, which they would first undo by multiplying every layer's output gradient by
   the batch size. The clipped, noised gradient is the same. Timed for a DP-SGD step
   (hooks, AdamW, batch 160: the size of a step of 128 patients with its 32 public
   windows).
3. The RDP accounting composes each earlier release's RDP from a cache instead of
   recomputing it (Opacus' RDPAccountant recomputes every release for every epsilon).
   The epsilons are the same to the bit. Timed for the accounting of one round of a
   site with two vocabulary releases and one round of 20 DP steps on its ledger: the
   noise search for the 60 steps left, the budget check and the epsilon after it, the
   cache emptied before each (a fresh worker; a running one also keeps the earlier
   rounds' releases).

Windows of the dp_recipe_sweep world (data seed 0: real padding), one thread, the two
variants of each row in alternating repeats so that machine load hits both alike.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/step_cost_bench.py [--repeats 5]

Prints a table and writes benchmarks/results/step_cost.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results" / "step_cost.json"


def world_batches(n: int, batch_size: int):
    """The sweep world's initial model and `n` batches of its pooled training windows."""
    import dp_recipe_sweep as sweep
    import torch
    from torch.utils.data import ConcatDataset, DataLoader

    from fedehr.shared.tokenizer.batch import Batch

    parser = argparse.ArgumentParser()
    sweep.world_arguments(parser)
    world = sweep.build_world(Path(tempfile.mkdtemp(prefix="step-cost-")),
                              parser.parse_args([]))
    pooled = ConcatDataset([d.train for d in world["data"].values()])
    loader = DataLoader(pooled, batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    return world["initial"](0), [Batch.from_tuple(parts)
                                 for parts, _ in zip(loader, range(n), strict=False)]


def plain_step(model, *, every_position: bool, train: bool):
    """A central training step (AdamW) or an evaluation batch, the head over every
    position or over the counted targets only."""
    import torch

    model.per_example_grads = every_position
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)

    def step(batch):
        if not train:
            with torch.no_grad():
                model.per_example_loss(batch)
            return
        optimizer.zero_grad(set_to_none=True)
        model.per_example_loss(batch).mean().backward()
        optimizer.step()
    return step


def dp_step(model, *, reduction: str, batch_size: int):
    """A DP-SGD step under Opacus' hooks, backpropagating the mean or the sum of the
    per-example losses (the optimizer divides by the expected batch either way)."""
    import torch
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    model.per_example_grads = True
    GradSampleModule(model, batch_first=True, loss_reduction=reduction)
    optimizer = DPOptimizer(torch.optim.AdamW(model.parameters(), lr=8e-3),
                            noise_multiplier=1.0, max_grad_norm=1.0,
                            expected_batch_size=batch_size, loss_reduction="mean")

    def step(batch):
        optimizer.zero_grad(set_to_none=True)
        losses = model.per_example_loss(batch)
        (losses.mean() if reduction == "mean" else losses.sum()).backward()
        optimizer.step()
    return step


def round_accounting(*, cached: bool):
    """A site's accounting calls of one round (site_handlers.train_round, train_dp), on a
    ledger holding two vocabulary releases and a first round of 20 steps."""
    from fedehr.client.privacy import PrivacyLedger
    from fedehr.shared.privacy import accounting

    ledger = PrivacyLedger.open(Path(tempfile.mkdtemp(prefix="step-cost-")) / "ledger.json",
                                epsilon_budget=8.0, delta=1e-5)
    for i in range(2):
        ledger.charge(5.0, 1.0, 1, purpose="vocab-release", round_id=f"vocab-{i}")
    ledger.charge(0.85, 0.083, 20, purpose="dp-sgd", round_id="round-1")
    cache = accounting._rdp

    def step(_):
        cache.cache_clear()
        accounting._rdp = cache if cached else cache.__wrapped__
        try:
            noise = ledger.noise_for_budget(0.083, 60)
            ledger.check(noise, 0.083, 20)
            ledger.epsilon_after(noise, 0.083, 20)
        finally:
            accounting._rdp = cache
    return step


def timed(fn, batches) -> float:
    t0 = time.perf_counter()
    for b in batches:
        fn(b)
    return (time.perf_counter() - t0) / len(batches)


def main(argv=None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=6, help="timed batches per repeat")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
    base, plain_batches = world_batches(args.steps, 32)
    _, dp_batches = world_batches(args.steps, 160)
    rows = {
        "central training step (batch 32)": (
            plain_batches, ("head over every position", "over the targets only"),
            lambda m, v: plain_step(m, every_position=v == 0, train=True)),
        "evaluation batch (32, no gradient)": (
            plain_batches, ("head over every position", "over the targets only"),
            lambda m, v: plain_step(m, every_position=v == 0, train=False)),
        "DP-SGD step (hooks, batch 160)": (
            dp_batches, ("hooks on the mean loss", "on the summed loss"),
            lambda m, v: dp_step(m, reduction=("mean", "sum")[v], batch_size=160)),
        "a site's privacy accounting for one round": (
            [None], ("every release recomputed", "cached per release"),
            lambda m, v: round_accounting(cached=v == 1)),
    }
    table = []
    for label, (batches, names, make) in rows.items():
        steps = [make(copy.deepcopy(base), v) for v in (0, 1)]
        times = ([], [])
        for _ in range(args.repeats):
            for v in (0, 1):
                times[v].append(timed(steps[v], batches))
        before, now = (statistics.median(t) for t in times)
        table.append({"step": label, "before": names[0], "before_s": round(before, 4),
                      "now": names[1], "now_s": round(now, 4),
                      "speedup": round(before / now, 2)})
    print("| step | before | s | now | s | speed-up |\n|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r['step']} | {r['before']} | {r['before_s']:.3f} | {r['now']} | "
              f"{r['now_s']:.3f} | {r['speedup']:.2f}x |")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"benchmark": "step_cost", "repeats": args.repeats,
                                   "steps": args.steps, "threads": 1,
                                   "torch": torch.__version__, "rows": table}, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
