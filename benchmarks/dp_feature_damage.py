"""Where does the DP noise take the probe's features? Swap parts between two saved models.

benchmarks/dp_recipe_sweep.py showed (issue 12) that 320 federated DP steps at epsilon 8
leave the probe's patient vectors at the untrained model's floor, while the same clipped
steps without noise lift them to the count baseline. This script takes the two final
models of such a pair (`dp_recipe_sweep.py --save-models DIR`), rebuilds their shared
start (the initial weights, then the public warm start; both deterministic), and scores
the probe (k=all, last+mean, the sites' tuning rows, as the sweep does) on hybrids: the
DP model with one part (token embedding, position or time embedding, one transformer
block, final norm) taken from the noise-free model, and the other way round. A part
whose swap moves the probe most is where the damage sits. The DP model with a part reset
to the warm start asks whether the DP rounds' change of that part helps the features or
hurts them. Besides the hybrids it prints how far each part moved from the warm start,
and how far the token embedding's rows moved by how often the sites' training windows
hold the token.

And where each model's clipping budget goes: DP-SGD clips a patient's whole gradient to
one norm, so a part that holds most of the squared norm leaves the others little signal
against the same noise per weight. Per state (init, warm, dp, clean) and site: the
per-patient gradient norm's quantiles and the mean share of its square by part, on a
seeded draw of training windows.

    .venv/bin/python benchmarks/dp_feature_damage.py --data-seed 1 --models DIR \
        --dp batch128-lr4x-warm-es-mix32-rounds16 \
        --clean batch128-lr4x-warm-es-mix32-rounds16-no-noise

Writes benchmarks/results/dp_feature_damage-seed{N}.json and prints the tables.
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
RESULTS = Path(__file__).parent / "results"
PARTS = ("tok_emb", "pos_emb", "time_emb", "blocks.0", "blocks.1", "ln_f", "lm_head")
FEATURE_PARTS = PARTS[:-1]  # the output head does not touch the patient vector
FREQUENCY_BINS = (0, 1, 10, 100, 1000, 10_000, float("inf"))
CLIP_WINDOWS = 48  # training windows per site whose gradients are measured one by one


def part_of(key: str) -> str:
    return next(p for p in PARTS if key == p or key.startswith(p + "."))


def swap(base: dict, donor: dict, part: str, rows=None) -> dict:
    """`base` with `part` (or only `rows` of it, for a vocabulary-sized part) from `donor`."""
    out = dict(base)
    for k, v in donor.items():
        if part_of(k) == part:
            if rows is None:
                out[k] = v
            else:
                out[k] = base[k].clone()
                out[k][rows] = v[rows]
    return out


def token_counts(world):
    """How many times the sites' training windows hold each token id."""
    import numpy as np

    counts = np.zeros(len(world["vocab"].tokens), dtype=np.int64)
    for d in world["data"].values():
        counts += np.bincount(d.train.cache.tokens, minlength=len(counts))
    return counts


def distances(states: dict, counts) -> dict:
    """Each part's distance from the warm start (relative to its norm), and the token
    embedding's mean row move by frequency bin (relative to a row's mean norm)."""
    warm = states["warm"]
    trained = {name: states[name] for name in ("dp", "clean")}
    out = {"parts": {}, "tok_emb_rows": {}}
    for part in PARTS:
        keys = [k for k in warm if part_of(k) == part and warm[k].is_floating_point()]
        norm0 = sum(float(warm[k].norm() ** 2) for k in keys) ** 0.5
        out["parts"][part] = {
            name: round(sum(float((s[k] - warm[k]).norm() ** 2) for k in keys) ** 0.5 / norm0, 3)
            for name, s in trained.items()}
    moved = {name: (s["tok_emb.weight"] - warm["tok_emb.weight"]).norm(dim=1).numpy()
             for name, s in trained.items()}
    row_norm = float(warm["tok_emb.weight"].norm(dim=1).mean())
    for lo, hi in zip(FREQUENCY_BINS, FREQUENCY_BINS[1:], strict=False):
        rows = (counts >= lo) & (counts < hi)
        if rows.any():
            label = f">= {lo}" if hi == float("inf") else \
                str(lo) if hi == lo + 1 else f"{lo}-{hi - 1}"
            out["tok_emb_rows"][label] = {
                "tokens": int(rows.sum()),
                **{name: round(float(m[rows].mean()) / row_norm, 3) for name, m in moved.items()}}
    return out


def clip_budget(model, state: dict, world) -> dict:
    """Per site: quantiles of a patient's gradient norm (each window alone, as Opacus sees
    it) and the mean share of the squared norm held by each part."""
    import numpy as np

    from fedehr.shared.tokenizer.batch import Batch

    model.load_state_dict(state)
    model.train()
    out = {}
    for site, d in world["data"].items():
        rng = np.random.default_rng(0)
        norms, shares = [], dict.fromkeys(PARTS, 0.0)
        for i in rng.choice(len(d.train), min(CLIP_WINDOWS, len(d.train)), replace=False):
            batch = Batch(*(f.unsqueeze(0) for f in d.train[int(i)]))
            model.zero_grad()
            model.per_example_loss(batch).sum().backward()
            squares = {k: float((p.grad ** 2).sum()) for k, p in model.named_parameters()
                       if p.grad is not None}
            total = sum(squares.values())
            norms.append(total ** 0.5)
            for k, v in squares.items():
                shares[part_of(k)] += v / total
        q10, q50, q90 = np.quantile(norms, [0.1, 0.5, 0.9])
        out[site] = {"norm_p10": round(q10, 3), "norm_median": round(q50, 3),
                     "norm_p90": round(q90, 3),
                     "share": {k: round(v / len(norms), 3) for k, v in shares.items()}}
    model.zero_grad()
    return out


def probe(model, state: dict, world) -> dict:
    """The sweep's probe (k=all, last+mean, tuning rows) on `state`."""
    from dp_recipe_sweep import TASKS

    from fedehr.shared.clinical.evaluate import evaluate
    from fedehr.shared.data import schema as S

    model.load_state_dict(state)
    cells = {}
    for name, (dataset, mapping) in world["eval"].items():
        result = evaluate((model, world["vocab"]), dataset, tasks=TASKS, ks=("all",), seeds=1,
                          mapping=mapping, test_split=S.TUNING, batch_size=64,
                          pooling="last+mean")
        for t in result.tasks:
            for m in t.methods:
                if m.label == "probe k=all":
                    cells[f"{name}/{t.task}"] = round(float(m.mean("auroc")), 4)
    return {**cells, "mean": round(sum(cells.values()) / len(cells), 4)}


def hybrids(states: dict, counts) -> dict[str, dict]:
    """Name -> state of every model the probe scores."""
    import numpy as np

    dp, clean, warm = states["dp"], states["clean"], states["warm"]
    out = {"init": states["init"], "warm": warm, "dp": dp, "clean": clean}
    for part in FEATURE_PARTS:
        out[f"dp, {part} from clean"] = swap(dp, clean, part)
        out[f"clean, {part} from dp"] = swap(clean, dp, part)
        out[f"dp, {part} from warm"] = swap(dp, warm, part)
    for below in (10, 100):
        rare = np.flatnonzero(counts < below).tolist()
        out[f"dp, tok_emb rows held < {below} times from warm"] = \
            swap(dp, warm, "tok_emb", rows=rare)
    return out


def main(argv=None) -> int:
    from dp_recipe_sweep import world_arguments

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    world_arguments(parser)
    parser.add_argument("--models", type=Path, required=True,
                        help="the folder of dp_recipe_sweep.py --save-models")
    parser.add_argument("--dp", required=True, help="recipe name of the DP model")
    parser.add_argument("--clean", required=True, help="recipe name of the noise-free model")
    parser.add_argument("--warm-recipe", default="batch128-lr4x-warm-es-mix32",
                        help="a sweep recipe whose warm start both models began from")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    os.environ.setdefault("POLARS_MAX_THREADS", "1")
    import torch
    from dp_recipe_sweep import RECIPES, build_world, warm_start

    torch.set_num_threads(1)
    paths = {k: args.models / f"{getattr(args, k)}-seed{args.data_seed}.pt"
             for k in ("dp", "clean")}
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        parser.error(f"no saved model at {', '.join(missing)}: run dp_recipe_sweep.py with "
                     f"--save-models {args.models} --data-seed {args.data_seed} first")
    out = args.out or RESULTS / f"dp_feature_damage-seed{args.data_seed}.json"
    with tempfile.TemporaryDirectory(prefix="fedehr-dp-damage-") as tmp:
        world = build_world(Path(tmp), args)
        recipe = RECIPES[args.warm_recipe]
        torch.manual_seed(0)  # as the sweep draws its initial weights
        model = world["initial"](recipe.init_seed, **dict(recipe.model))
        states = {"init": {k: v.clone() for k, v in model.state_dict().items()}}
        warm_start(model, recipe, world)
        states["warm"] = {k: v.clone() for k, v in model.state_dict().items()}
        states.update({k: torch.load(p, weights_only=True) for k, p in paths.items()})
        counts = token_counts(world)
        moved = distances(states, counts)
        budget = {name: clip_budget(model, state, world) for name, state in states.items()}
        scored = {}
        for name, state in hybrids(states, counts).items():
            t0 = time.perf_counter()
            scored[name] = probe(model, state, world)
            print(f"{name:<44} probe {scored[name]['mean']:.3f}  "
                  f"({time.perf_counter() - t0:.0f}s)", flush=True)
    print("\n| part | moved from the warm start, dp | clean |\n|---|---|---|")
    for part, d in moved["parts"].items():
        print(f"| {part} | {d['dp']:.3f} | {d['clean']:.3f} |")
    print("\n| times the sites' training windows hold the token | tokens | row moved, dp "
          "| clean |\n|---|---|---|---|")
    for b, d in moved["tok_emb_rows"].items():
        print(f"| {b} | {d['tokens']} | {d['dp']:.3f} | {d['clean']:.3f} |")
    print("\n| model | site | gradient norm p10 / median / p90 | "
          + " | ".join(f"share of norm², {p}" for p in PARTS) + " |")
    for name, sites in budget.items():
        for site, b in sites.items():
            print(f"| {name} | {site} | {b['norm_p10']:.2f} / {b['norm_median']:.2f} / "
                  f"{b['norm_p90']:.2f} | " + " | ".join(f"{b['share'][p]:.2f}" for p in PARTS)
                  + " |")
    cells = [k for k in scored["dp"] if k != "mean"]
    print("\n| model | probe (last+mean) | " + " | ".join(cells) + " |")
    for name, s in scored.items():
        print(f"| {name} | {s['mean']:.3f} | " + " | ".join(f"{s[c]:.3f}" for c in cells) + " |")
    out.write_text(json.dumps({
        "benchmark": "dp_feature_damage", "data_seeds": [args.data_seed],
        "config": {k: str(v) for k, v in vars(args).items()},
        "moved": moved, "clip_budget": budget, "probe_last_mean": scored}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
