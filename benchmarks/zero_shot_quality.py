"""Zero-shot quality on a small model: do generated futures reach the question's horizon?

Trains a tiny model non-privately on one synthetic hospital (`synthesize`, the
train split), then answers the benchmark's tasks zero-shot on held-out rows and
compares with the k=all logistic probe on the same rows, with the measure of
benchmarks/fed_vs_central.py (`zero_shot_vs_probe`, target 5 of issue 12):
AUROC of both, the share of continuations left undecided (out of tokens before
the window closed), the token budget the horizon and the data gave, and how far
(in days) the continuations' clocks reached against the window's horizon.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/zero_shot_quality.py \\
        [--patients 2500] [--steps 600] [--max-len 128] [--samples 8] [--rows 60] \\
        [--max-tokens N] [--keep DIR [--reuse]]

`--max-tokens` fixes the budget (e.g. 256, the old default, to measure the
undecided share it caused); without it the budget is derived per task.
`--keep DIR --reuse` reuses the hospital and the trained model kept in DIR.
Writes benchmarks/results/zero_shot_quality.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def parse(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=2500)
    parser.add_argument("--steps", type=int, default=600, help="non-private training steps")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--samples", type=int, default=8, help="continuations per row")
    parser.add_argument("--rows", type=int, default=60, help="test rows per task")
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="fixed token budget (default: from the horizon and the data)")
    parser.add_argument("--estimator", default="expected", choices=("expected", "counted"),
                        help="each continuation's weight: its summed outcome hazard, or 0/1")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None)
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "zero_shot_quality.json")
    return parser.parse_args(argv)


def train_model(site: Path, args, workdir: Path):
    """A tiny model trained without DP on the hospital's train split (saved for --reuse)."""
    import polars as pl
    import torch

    from fedehr.shared.data import schema as S
    from fedehr.shared.data.dataset import MEDSDataset
    from fedehr.shared.model import EHRModel, ModelConfig
    from fedehr.shared.tokenizer.cache import load_or_build
    from fedehr.shared.tokenizer.mapping import CodeMapping
    from fedehr.shared.tokenizer.merge import vocabulary_from_public
    from fedehr.shared.tokenizer.vocabulary import Vocabulary
    from fedehr.shared.tokenizer.windows import PatientWindows
    from fedehr.shared.training import train

    saved = workdir / "model.pt"
    dataset = MEDSDataset.open(site)
    if args.reuse and saved.exists():
        state = torch.load(saved, weights_only=False)
        vocab = Vocabulary.from_dict(state["vocab"])
        model = EHRModel(ModelConfig(**state["config"]))
        model.load_state_dict(state["weights"])
        return model.eval(), vocab, state["training"]
    mapping = CodeMapping.from_config(None, dataset.codes())
    events = mapping.apply(dataset.scan(S.TRAIN).collect()
                           .with_columns(pl.col(S.TIME).cast(pl.Datetime("us"))))
    vocab = vocabulary_from_public(events, min_count=5)
    cache = load_or_build(dataset, vocab, mapping, workdir / "cache", split=S.TRAIN)
    config = ModelConfig.preset("tiny", len(vocab), max_len=args.max_len, note_dim=0,
                                image_dim=0, pro_dim=0)
    torch.manual_seed(0)
    model = EHRModel(config)
    result = train(model, PatientWindows(cache, vocab, config.max_len), steps=args.steps,
                   batch_size=args.batch_size, lr=args.lr, dp=None, seed=0, num_threads=1)
    training = {"steps": result.steps, "seconds": round(result.seconds, 1),
                "mean_train_loss": round(result.mean_loss, 4), "patients": len(cache),
                "vocab_tokens": len(vocab)}
    torch.save({"vocab": vocab.to_dict(), "config": config.to_dict(),
                "weights": model.state_dict(), "training": training}, saved)
    return model.eval(), vocab, training


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    os.environ.setdefault("POLARS_MAX_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from fed_vs_central import TASKS, Hospital, predictions, zero_shot_vs_probe

    from fedehr.shared.atomic import write_text
    from fedehr.shared.clinical.evaluate import evaluate
    from fedehr.shared.data.dataset import MEDSDataset
    from fedehr.shared.data.synth import synthesize
    from fedehr.shared.tokenizer.mapping import CodeMapping

    started = time.perf_counter()
    workdir = Path(args.keep or tempfile.mkdtemp(prefix="fedehr-zs-quality-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    summary = synthesize(workdir / "hospital", sites=1, patients=args.patients,
                         seed=args.data_seed, overwrite=args.reuse)[0]
    site = Path(summary.path)
    model, vocab, training = train_model(site, args, workdir)
    print(f"[{time.perf_counter() - started:6.0f}s] model: {training}", flush=True)
    hospital = Hospital(summary.name, site, summary.harmonisation, view=site)
    codes = MEDSDataset.open(site).codes()
    result = evaluate((model, vocab), site, tasks=TASKS, ks=("all",), seeds=1,
                      zero_shot_samples=0, mapping=CodeMapping.from_config(None, codes),
                      batch_size=64)
    settings = argparse.Namespace(zero_shot_rows=args.rows, zero_shot_samples=args.samples,
                                  zero_shot_max_tokens=args.max_tokens,
                                  zero_shot_estimator=args.estimator)
    zero = zero_shot_vs_probe(model, vocab, hospital, predictions(result), settings,
                              workdir / "eval")
    print(f"{'task':<16} {'zero-shot':>9} {'probe':>6} {'undecided':>9} {'budget':>6} "
          f"{'horizon d':>9} {'reach p50/p90 d':>15} {'mean p':>6} {'rate':>5} {'s':>5}")
    for task, z in zero.items():
        if "note" in z:
            print(f"{task:<16} {z['note']}")
            continue
        reach = f"{z['reach_days']['p50']}/{z['reach_days']['p90']}"
        print(f"{task:<16} {z['zero_shot_auroc']!s:>9} {z['probe_all_auroc_same_rows']!s:>6} "
              f"{z['truncated_share']:>9.1%} {z['budget']:>6} {z['horizon_days']:>9} "
              f"{reach:>15} {z['mean_probability']!s:>6} {z['observed_rate']:>5} "
              f"{z['seconds']:>5}")
    report = {"benchmark": "zero_shot_quality",
              "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "training": training, "zero_shot": zero,
              "total_seconds": round(time.perf_counter() - started, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out} ({report['total_seconds']}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
