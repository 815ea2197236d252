"""Training throughput of the EHR model: non-DP vs Opacus hooks vs ghost clipping.

All three train the same model (same initial weights) on the same batches, in
one process, in alternating rounds so that machine load hits them alike; the
table reports median step time, tokens/s and the ratio to non-DP. A DP step is
the full Opacus step: per-example gradients (or norms), clipping, noise, SGD.

    .venv/bin/python benchmarks/dp_throughput_bench.py [--preset tiny] [--repeats 5]

Writes benchmarks/results/dp_throughput.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch
from opacus import GradSampleModule
from opacus.grad_sample import GradSampleModuleFastGradientClipping
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping
from opacus.utils.fast_gradient_clipping_utils import DPTensorFastGradientClipping

from fedehr.shared.model import EHRModel, ModelConfig
from fedehr.shared.model.config import REFERENCE_VOCAB_SIZE
from fedehr.shared.tokenizer.batch import PAD_ID, Batch

RESULTS = Path(__file__).parent / "results" / "dp_throughput.json"
NOISE, CLIP, LR = 1.0, 1.0, 0.05


def make_batches(config: ModelConfig, n: int, batch_size: int, seq_len: int,
                 seed: int = 0) -> list[Batch]:
    """Random right-padded windows (lengths from seq_len/4 to seq_len) with notes,
    images and PROs at realistic sparsity."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        lengths = torch.randint(seq_len // 4, seq_len + 1, (batch_size, 1), generator=g)
        valid = torch.arange(seq_len) < lengths
        tokens = torch.randint(1, config.vocab_size, (batch_size, seq_len), generator=g)
        times = torch.rand(batch_size, seq_len, generator=g).cumsum(1) * valid
        events = (torch.rand(batch_size, seq_len, 1, generator=g) < 0.05) & valid.unsqueeze(-1)
        note = torch.randn(batch_size, seq_len, config.note_dim, generator=g) * events
        image = torch.randn(batch_size, seq_len, config.image_dim, generator=g) * events
        pro = torch.randn(batch_size, config.pro_dim, generator=g)
        pro_mask = (torch.rand(batch_size, generator=g) < 0.5).float()
        batches.append(Batch(tokens.masked_fill(~valid, PAD_ID), times, note, image, pro,
                             pro_mask))
    return batches


class Trainer:
    """One training mode: `step(batch)` runs forward, backward and optimizer step."""

    def __init__(self, mode: str, model: EHRModel, batch_size: int):
        self.mode = mode
        self.model = model
        model.per_example_grads = mode != "non-DP"  # Opacus: the head over every position
        sgd = torch.optim.SGD(model.parameters(), lr=LR)
        dp = dict(noise_multiplier=NOISE, max_grad_norm=CLIP, expected_batch_size=batch_size,
                  loss_reduction="mean")
        if mode == "non-DP":
            self.wrapped, self.optimizer = model, sgd
        elif mode == "DP hooks":
            self.wrapped = GradSampleModule(model, batch_first=True, loss_reduction="mean")
            self.optimizer = DPOptimizer(sgd, **dp)
        elif mode == "DP ghost clipping":
            self.wrapped = GradSampleModuleFastGradientClipping(
                model, batch_first=True, loss_reduction="mean", max_grad_norm=CLIP,
                use_ghost_clipping=True)
            self.optimizer = DPOptimizerFastGradientClipping(sgd, **dp)
        else:
            raise ValueError(mode)

    def step(self, batch: Batch) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        losses = self.model.per_example_loss(batch)
        if self.mode == "DP ghost clipping":
            DPTensorFastGradientClipping(self.wrapped, self.optimizer, losses, "mean").backward()
        else:
            losses.mean().backward()
        self.optimizer.step()


def run(preset: str, batch_size: int, seq_len: int, steps: int, repeats: int,
        vocab_size: int, pro_dim: int) -> dict:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    config = ModelConfig.preset(preset, vocab_size, pro_dim=pro_dim,
                                max_len=max(seq_len, 16))
    base = EHRModel(config)
    batches = make_batches(config, steps, batch_size, seq_len)
    tokens_per_round = sum(int((b.tokens != PAD_ID).sum()) for b in batches)
    modes = ["non-DP", "DP hooks", "DP ghost clipping"]
    trainers = [Trainer(m, copy.deepcopy(base), batch_size) for m in modes]

    for trainer in trainers:  # warm-up: allocator, kernels
        trainer.step(batches[0])
    seconds: dict[str, list[float]] = {m: [] for m in modes}
    for r in range(repeats):
        order = trainers if r % 2 == 0 else trainers[::-1]  # alternate who goes first
        for trainer in order:
            start = time.perf_counter()
            for batch in batches:
                trainer.step(batch)
            seconds[trainer.mode].append(time.perf_counter() - start)

    rows = []
    base_time = statistics.median(seconds["non-DP"])
    for mode in modes:
        t = statistics.median(seconds[mode])
        rows.append({"mode": mode, "step_ms": 1000 * t / steps,
                     "tokens_per_s": tokens_per_round / t, "throughput_ratio": base_time / t,
                     "round_seconds": seconds[mode]})
    return {"preset": preset, "params": base.num_params(), "config": config.to_dict(),
            "batch_size": batch_size, "seq_len": seq_len, "steps_per_round": steps,
            "repeats": repeats, "non_pad_tokens_per_round": tokens_per_round,
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "machine": platform.machine(), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4, help="steps per timed round")
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds")
    parser.add_argument("--vocab-size", type=int, default=REFERENCE_VOCAB_SIZE)
    parser.add_argument("--pro-dim", type=int, default=8)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    # Opacus' full backward hooks on the embeddings see inputs that need no gradient
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    result = run(args.preset, args.batch_size, args.seq_len, args.steps, args.repeats,
                 args.vocab_size, args.pro_dim)

    print(f"{args.preset} model, {result['params'] / 1e6:.2f}M parameters, vocab "
          f"{args.vocab_size}, batch {args.batch_size} x {args.seq_len}, "
          f"{result['threads']} threads, median of {args.repeats} alternating rounds")
    print(f"{'mode':<20}{'step ms':>10}{'tokens/s':>12}{'vs non-DP':>11}")
    for row in result["rows"]:
        print(f"{row['mode']:<20}{row['step_ms']:>10.1f}{row['tokens_per_s']:>12.0f}"
              f"{row['throughput_ratio']:>10.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
