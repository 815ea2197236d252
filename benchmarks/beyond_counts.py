"""What the 24-hour record holds beyond code counts, and how much of it a model's features carry.

Issue 12's target 1 asks the central model to beat the count-feature baseline, and
says: if the world's outcomes depend on counts alone, say so. This measures it on
the world of benchmarks/dp_recipe_sweep.py (same draw, same vocabulary, same
tuning rows), with linear probes (`probes.fit_logistic`) fitted on each training
site's train split and scored on its tuning split (never on test rows):

    counts           the baseline: log1p counts of each code in the history
    binned counts    counts of <code>//Q<bin> (the vocabulary's value bins): the bag of
                     tokens a vocabulary of joint code-and-value tokens would count
    counts+values    the counts, plus the first-day lab values that the counts leave
                     out: first, last, min and max of each numeric code in the 24 h
                     before the history's last event (the prediction time's first day;
                     signed log1p) and whether it was drawn
    model            a model's features (`EHRModel.embed`, last+mean), for the
                     untrained initial weights (the floor) and for each `--models` file
    counts+model     the counts with those features: what the model adds to the counts

Each set is also scored with the probe's L2 strength chosen by 5-fold cross-validation
on the fit rows ("(C by CV)"), to see whether the library's fixed C=0.1 holds a set back,
and the bootstrap standard error of its difference from the counts in each cell (the
same rows resampled): how much a one-cell comparison can move by the rows alone.

If counts+values beats counts, the record carries outcome signal beyond counts; if
counts+model does not reach counts+values, the model has not learned to read it.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/beyond_counts.py --data-seed 0 \\
        [--models /tmp/models/central-es-seed0.pt ...]

`--models` takes state dicts saved by `dp_recipe_sweep.py --save-models DIR` at the
same --data-seed and --patients (named <recipe>-seed<S>.pt). Prints a table per
run and a summary over the data seeds in the results file
(benchmarks/results/beyond_counts.json, one run per data seed).
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
CV_CS = (1e-4, 1e-3, 1e-2, 0.1, 1.0)  # the library probe's fixed C is 0.1
BOOTSTRAP_DRAWS = 500
VALUE_WINDOW_HOURS = 24  # the tasks predict 24 h after admission: the first day's labs


def value_features(frame, n_rows: int):
    """float32 [n_rows, 5 x numeric codes]: first, last, min, max (signed log1p) and a
    drawn flag of each numeric code in the VALUE_WINDOW_HOURS before each history's last
    event (the history ends at the prediction time, so this is that day's record).
    `frame`: the histories' events with the site's code mapping applied."""
    import numpy as np
    import polars as pl

    from fedehr.shared.data import schema as S

    end = frame.group_by(S.SUBJECT_ID).agg(pl.col(S.TIME).max().alias("end"))
    recent = (frame.join(end, on=S.SUBJECT_ID)
              .filter(pl.col(S.NUMERIC_VALUE).is_not_null()
                      & (pl.col(S.TIME) > pl.col("end")
                         - pl.duration(hours=VALUE_WINDOW_HOURS))))
    stats = ("first", "last", "min", "max")
    agg = recent.group_by(S.SUBJECT_ID, S.CODE).agg(
        *(getattr(pl.col(S.NUMERIC_VALUE), s)().alias(s) for s in stats))
    codes = sorted(set(agg[S.CODE].to_list()))
    out = np.zeros((n_rows, len(codes) * (len(stats) + 1)), dtype=np.float32)
    for j, code in enumerate(codes):
        part = agg.filter(pl.col(S.CODE) == code)
        rows = part[S.SUBJECT_ID].to_numpy()
        base = j * (len(stats) + 1)
        for k, s in enumerate(stats):
            v = part[s].to_numpy().astype(np.float32)
            out[rows, base + k] = np.sign(v) * np.log1p(np.abs(v))
        out[rows, base + len(stats)] = 1.0
    return out


def binned_codes(frame, bin_edges: dict):
    """The (mapped) events with each numeric code that has bin edges renamed
    <code>//Q<bin>: the bag of tokens a vocabulary of joint code-and-value tokens would
    count."""
    import numpy as np
    import polars as pl

    from fedehr.shared.data import schema as S

    codes = np.asarray(frame[S.CODE].to_list(), dtype=object)
    values = frame[S.NUMERIC_VALUE].fill_null(np.nan).to_numpy()
    for code in set(codes.tolist()) & set(bin_edges):
        at = np.flatnonzero((codes == code) & np.isfinite(values))
        bins = np.searchsorted(bin_edges[code], values[at], side="right")
        codes[at] = [f"{code}//Q{b}" for b in bins]
    return frame.with_columns(pl.Series(S.CODE, codes.tolist(), dtype=pl.String))


def site_aurocs(dataset, mapping, vocab, models: dict, tasks) -> dict:
    """{feature set: {task: AUROC}} on the site's tuning rows."""
    import numpy as np
    import polars as pl

    from fedehr.shared.clinical import labels as L
    from fedehr.shared.clinical.baseline import CountFeatures
    from fedehr.shared.clinical.evaluate import subject_split
    from fedehr.shared.clinical.history import history_events, history_windows
    from fedehr.shared.clinical.metrics import auroc
    from fedehr.shared.clinical.probes import embed, fit_logistic
    from fedehr.shared.data import schema as S

    labels = L.extract_many(dataset, tasks, L.predicates_path(None, dataset))
    subjects = np.concatenate([lab[L.SUBJECT_ID].to_numpy() for lab in labels])
    train, tuning, _ = subject_split(dataset, subjects, test_split=S.TUNING)
    queries = (pl.concat([lab.select(L.SUBJECT_ID, L.PREDICTION_TIME) for lab in labels])
               .unique().sort([L.SUBJECT_ID, L.PREDICTION_TIME]))
    events = history_events(dataset, queries)
    train_rows = np.flatnonzero(queries[L.SUBJECT_ID].is_in(list(train)).to_numpy())
    mapped = mapping.apply(events.select(S.SUBJECT_ID, S.TIME, S.CODE, S.NUMERIC_VALUE))
    counts = CountFeatures.fit(mapped, train_rows).transform(mapped, queries.height)
    binned = binned_codes(mapped, vocab.bin_edges)
    features = {"counts": counts,
                "counts+values": np.hstack([counts, value_features(mapped, queries.height)]),
                "binned counts": CountFeatures.fit(binned, train_rows).transform(
                    binned, queries.height)}
    some_model = next(iter(models.values()))
    windows = history_windows(dataset, queries, vocab, max_len=some_model.config.max_len,
                              mapping=mapping, events=events)
    for name, model in models.items():
        x = embed(model, windows, pooling="last+mean")
        features[name] = x
        features[f"counts+{name}"] = np.hstack([counts, x])
    out, spread = {}, {}
    for task, lab in zip(tasks, labels, strict=True):
        rows = lab.join(queries.with_row_index("row"), on=[L.SUBJECT_ID, L.PREDICTION_TIME],
                        how="left", maintain_order="left")
        idx = rows["row"].to_numpy().astype(np.int64)
        y = rows[L.BOOLEAN_VALUE].to_numpy().astype(int)
        fit = rows[L.SUBJECT_ID].is_in(list(train)).to_numpy()
        test = rows[L.SUBJECT_ID].is_in(list(tuning)).to_numpy()
        probs = {}
        for name, x in features.items():
            for suffix, fitter in (("", fit_logistic), (" (C by CV)", fit_logistic_cv)):
                probe = fitter(x[idx[fit]], y[fit])
                probs[name + suffix] = probe.predict_proba(x[idx[test]])[:, 1]
                out.setdefault(name + suffix, {})[task.name] = round(
                    float(auroc(y[test], probs[name + suffix])), 4)
        for name, p in probs.items():
            spread.setdefault(name, {})[task.name] = round(
                paired_se(y[test], p, probs["counts"]), 4)
    return out, spread


def paired_se(y, p, p_counts, draws: int = BOOTSTRAP_DRAWS) -> float:
    """Bootstrap standard error of AUROC(p) - AUROC(p_counts) over the same test rows: how
    far a one-cell comparison with the counts moves by the draw of the rows alone."""
    import numpy as np

    from fedehr.shared.clinical.metrics import auroc

    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(draws):
        i = rng.integers(0, len(y), len(y))
        if 0 < y[i].sum() < len(i):
            diffs.append(auroc(y[i], p[i]) - auroc(y[i], p_counts[i]))
    return float(np.std(diffs, ddof=1))


def fit_logistic_cv(x, y):
    """The library probe with its L2 strength chosen by 5-fold CV (AUROC) on the fit rows."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegressionCV(
        Cs=CV_CS, l1_ratios=(0.0,), cv=5, scoring="roc_auc", max_iter=2000,
        use_legacy_attributes=False)).fit(x, y)


def load_models(world, paths: list[Path]) -> dict:
    """The untrained floor, then each saved model, built with its sweep recipe's config."""
    import torch
    from dp_recipe_sweep import RECIPES

    models = {"untrained": world["initial"](0)}
    for path in paths:
        name = path.stem.rsplit("-seed", 1)[0]
        recipe = RECIPES.get(name)
        model = world["initial"](0, **dict(recipe.model if recipe else ()))
        model.load_state_dict(torch.load(path, map_location="cpu"))
        models[name] = model
    return models


def print_table(cells: dict, tasks: list[str], *, difference: bool = True) -> None:
    """One data seed: every cell, the mean and (`difference`) the mean's distance from the
    counts'."""
    names = [n for n in next(iter(cells.values())) if difference or n != "counts"]
    print("| features | " + " | ".join(f"{site} {t}" for site in cells for t in tasks)
          + " | mean |" + (" - counts |" if difference else ""))
    print("|---" * (len(cells) * len(tasks) + 2 + difference) + "|")
    base = _mean(cells, "counts", tasks)
    for name in names:
        values = [cells[site][name][t] for site in cells for t in tasks]
        mean = _mean(cells, name, tasks)
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {mean:.3f} |"
              + (f" {mean - base:+.3f} |" if difference else ""))


def print_summary(runs: dict, tasks: list[str]) -> None:
    """Over the data seeds in the results file: mean - counts per seed, and how many cells
    beat the counts."""
    seeds = sorted(runs, key=int)
    names = [n for n in next(iter(runs[seeds[0]]["auroc"].values()))
             if all(n in next(iter(runs[s]["auroc"].values())) for s in seeds)]
    print(f"\nover data seeds {', '.join(seeds)}: mean AUROC - counts (cells >= counts)\n")
    print("| features | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |")
    print("|---" * (len(seeds) + 2) + "|")
    for name in names:
        diffs, wins, total = [], 0, 0
        for s in seeds:
            cells = runs[s]["auroc"]
            diffs.append(_mean(cells, name, tasks) - _mean(cells, "counts", tasks))
            wins += sum(cells[site][name][t] >= cells[site]["counts"][t]
                        for site in cells for t in tasks)
            total += len(cells) * len(tasks)
        print(f"| {name} | " + " | ".join(f"{d:+.3f}" for d in diffs)
              + f" | {sum(diffs) / len(diffs):+.3f} ({wins} of {total}) |")


def _mean(cells: dict, name: str, tasks: list[str]) -> float:
    values = [cells[site][name][t] for site in cells for t in tasks]
    return sum(values) / len(values)


def save(out: Path, seed: int, run: dict) -> dict:
    """Add (or replace) this seed's run in the results file; temp file, then rename."""
    result = json.loads(out.read_text()) if out.exists() else {
        "benchmark": "beyond_counts", "value_window_hours": VALUE_WINDOW_HOURS, "runs": {}}
    result["runs"][str(seed)] = run
    result["data_seeds"] = sorted(int(s) for s in result["runs"])
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out)
    return result


def main(argv=None) -> int:
    from dp_recipe_sweep import TASKS, build_world, world_arguments

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    world_arguments(parser)
    parser.add_argument("--models", type=Path, nargs="*", default=[],
                        help="state dicts from dp_recipe_sweep.py --save-models (same world)")
    parser.add_argument("--out", type=Path, default=RESULTS / "beyond_counts.json",
                        help="results file; this data seed's run replaces an earlier one "
                        "(default %(default)s)")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.models if not p.is_file()]
    if missing:
        parser.error(f"--models: no such file: {', '.join(missing)}")
    os.environ.setdefault("POLARS_MAX_THREADS", "1")
    import torch

    from fedehr.shared.clinical import labels as L

    torch.set_num_threads(1)
    tasks = [L.load_task(t) for t in TASKS]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fedehr-beyond-counts-") as tmp:
        world = build_world(Path(tmp), args)
        models = load_models(world, args.models)
        cells, spread = {}, {}
        for site, (dataset, mapping) in world["eval"].items():
            cells[site], spread[site] = site_aurocs(dataset, mapping, world["vocab"], models,
                                                    tasks)
            print(f"{site} done ({time.perf_counter() - t0:.0f}s)", flush=True)
    print(f"\nk=all linear probe AUROC on the tuning rows, data seed {args.data_seed}, "
          f"{args.patients} patients\n")
    print_table(cells, list(TASKS))
    print("\nbootstrap standard error of (set - counts) in each cell, the same test rows:\n")
    print_table(spread, list(TASKS), difference=False)
    result = save(args.out, args.data_seed, {
        "patients": args.patients, "models": [p.name for p in args.models], "auroc": cells,
        "paired_se_vs_counts": spread,
        "seconds": round(time.perf_counter() - t0, 1)})
    print_summary(result["runs"], list(TASKS))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
