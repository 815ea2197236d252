"""Issue 12's targets 1-5, read from fed_vs_central results files (no training).

One file: each target, met or not. Several (one per data seed): each measure per
seed, then the mean and the spread (sample standard deviation) over the seeds.
Files that are runs of one data seed also get the run-to-run table: how far each
arm's 16 cells moved from the first run (the benchmark's own noise).

    .venv/bin/python benchmarks/fvc_targets.py benchmarks/results/fed_vs_central.json
    .venv/bin/python benchmarks/fvc_targets.py seed0.json seed1.json seed2.json \
        [--out benchmarks/results/fed_vs_central-seeds.json]
"""

import argparse
import json
import math
import statistics

TASKS = ("mortality", "readmission_30d", "long_los", "icu_transfer")
# measure: (label, target test)
MEASURES = {
    "a_above_counts": ("1. (a) >= counts, of 12 in-federation cells (>= 10)", lambda v: v >= 10),
    # the cells are small (hospital_d readmission: 17-21 test rows): the mean is the steadier read
    "a_minus_counts": ("1. mean (a) - counts, 12 in-federation cells", None),
    "gap_in": ("2. mean (a)-(b), 12 in-federation cells (<= 0.03)", lambda v: v <= 0.03),
    "gap_left": ("2. mean (a)-(b), 4 left-out cells (<= 0.05)", lambda v: v <= 0.05),
    "gap_worst": ("2. worst cell (a)-(b) (<= 0.08)", lambda v: v <= 0.08),
    "b_vs_c": ("3. (b) >= (c), of 24 (>= 22)", lambda v: v >= 22),
    "b_minus_c": ("3. mean (b) - (c), 24 comparisons", None),
    "b_vs_d": ("4. (b) >= (d) - 0.01, of 16 (>= 14)", lambda v: v >= 14),
    "anchor_rise": ("4. anchor loss rise over the rounds (<= +5%)", lambda v: v <= 0.05),
    "zs_mortality": ("5. zero-shot AUROC, mortality (>= 0.75, ratio >= 0.9)", None),
    "zs_ratio_mortality": ("5. zero-shot / probe, mortality (>= 0.9)", lambda v: v >= 0.9),
    "zs_ratio_long_los": ("5. zero-shot / probe, long stay (>= 0.9)", lambda v: v >= 0.9),
    "undecided": ("5. undecided share, worst of the two (<= 5%)", lambda v: v <= 0.05),
    "b_mean": ("mean (b) AUROC over the 16 cells", None),
    "a_mean": ("mean (a) AUROC over the 16 cells", None),
    "b_over_untrained": ("mean (b) - (0) untrained over the 16 cells", None),
    "a_over_untrained": ("mean (a) - (0) untrained over the 16 cells", None),
    # what training on the sites adds to the public model every site receives before round 1
    "b_over_warm": ("mean (b) - (w) warm start over the 16 cells", None),
    "a_over_warm": ("mean (a) - (w) warm start over the 16 cells", None),
    "c_over_warm": ("mean (c) - (w) warm start over the 24 (c) cells", None),
}


def measures(d: dict) -> dict[str, float]:
    def auroc(arm, where, task, method="probe k=all"):
        return d["evaluation"][arm][where]["summary"][task]["methods"][method]["auroc"]

    sites = [h["name"] for h in d["hospitals"] if not h["left_out"]]
    left = next(h["name"] for h in d["hospitals"] if h["left_out"])
    cells = [(s, t) for s in sites for t in TASKS]
    every = [(w, t) for w in [*sites, left] for t in TASKS]
    gaps = [auroc("a", s, t) - auroc("b", s, t) for s, t in cells]
    left_gaps = [auroc("a", left, t) - auroc("b", left, t) for t in TASKS]
    history = d["training"]["b"]["history"]
    first, last = history[0]["anchor_loss"], history[-1]["anchor_loss"]
    zero = d["zero_shot"][left]

    def over(base, cells):  # mean of arm - base over (arm, where, task); nan if no base arm
        if base not in d["evaluation"]:
            return float("nan")
        return sum(auroc(a, w, t) - auroc(base, w, t) for a, w, t in cells) / len(cells)

    alone = [(f"c:{s}", w, t) for s in sites for w in (s, left) for t in TASKS]

    return {
        "a_above_counts": sum(auroc("a", s, t) >= auroc("b", s, t, "counts k=all")
                              for s, t in cells),
        "a_minus_counts": sum(auroc("a", s, t) - auroc("b", s, t, "counts k=all")
                              for s, t in cells) / len(cells),
        "gap_in": sum(gaps) / len(gaps), "gap_left": sum(left_gaps) / len(left_gaps),
        "gap_worst": max(gaps + left_gaps),
        "b_vs_c": sum(auroc("b", w, t) >= auroc(a, w, t) for a, w, t in alone),
        "b_minus_c": sum(auroc("b", w, t) - auroc(a, w, t) for a, w, t in alone) / len(alone),
        "b_vs_d": sum(auroc("b", w, t) >= auroc("d", w, t) - 0.01 for w, t in every),
        "anchor_rise": last / first - 1,
        "zs_mortality": zero["mortality"]["zero_shot_auroc"],
        "zs_ratio_mortality": zero["mortality"]["ratio"],
        "zs_ratio_long_los": zero["long_los"]["ratio"],
        "undecided": max(zero[t]["truncated_share"] for t in ("mortality", "long_los")),
        "b_mean": sum(auroc("b", w, t) for w, t in every) / len(every),
        "a_mean": sum(auroc("a", w, t) for w, t in every) / len(every),
        "b_over_untrained": over("0", [("b", w, t) for w, t in every]),
        "a_over_untrained": over("0", [("a", w, t) for w, t in every]),
        "b_over_warm": over("w", [("b", w, t) for w, t in every]),
        "a_over_warm": over("w", [("a", w, t) for w, t in every]),
        "c_over_warm": over("w", alone),
    }


def cell_aurocs(d: dict, arm: str) -> dict[tuple[str, str], float]:
    """The k=all probe AUROC of `arm` in each (hospital, task) cell."""
    return {(where, task): s["methods"]["probe k=all"]["auroc"]
            for where, v in d["evaluation"][arm].items() for task, s in v["summary"].items()}


def run_to_run(runs: list[dict]) -> None:
    """Per arm, the cells' moves from the first run to each other run of the same seed."""
    print("\n| arm | run | mean AUROC | mean move | sd of the moves | largest move |")
    print("|---|---|---|---|---|---|")
    for arm in ("a", "b", "d", "0", "w"):
        if not all(arm in r["evaluation"] for r in runs):
            continue
        first = cell_aurocs(runs[0], arm)
        print(f"| ({arm}) | 1 | {statistics.fmean(first.values()):.3f} | | | |")
        for i, run in enumerate(runs[1:], start=2):
            cells = cell_aurocs(run, arm)
            moves = {k: cells[k] - first[k] for k in first}
            (where, task), most = max(moves.items(), key=lambda kv: abs(kv[1]))
            print(f"| ({arm}) | {i} | {statistics.fmean(cells.values()):.3f} | "
                  f"{statistics.fmean(moves.values()):+.3f} | "
                  f"{statistics.stdev(moves.values()):.3f} | {most:+.3f} ({where} {task}) |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", help="fed_vs_central results, one per seed")
    parser.add_argument("--out", help="also write the table as JSON (data_seeds, measures)")
    args = parser.parse_args(argv)
    runs = [json.load(open(p)) for p in args.results]
    seeds = [r["config"]["data_seed"] for r in runs]
    rows = [measures(r) for r in runs]
    head = "| measure | " + " | ".join(f"seed {s}" for s in seeds)
    print(head + (" | mean (sd) | target |" if len(rows) > 1 else " | target |"))
    print("|---" * (len(rows) + (3 if len(rows) > 1 else 2)) + "|")
    table = {}
    for key, (label, test) in MEASURES.items():
        values = [row[key] for row in rows]
        cells = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in values]
        mean = statistics.fmean(values)
        if math.isnan(mean):  # a file from before the measure
            spread = math.nan
        else:
            spread = statistics.stdev(values) if len(rows) > 1 else 0.0
        if len(rows) > 1:
            cells.append(f"{mean:.3f} ({spread:.3f})")
        verdict = "" if test is None else ("met" if test(mean) else "not met")
        print(f"| {label} | " + " | ".join(cells) + f" | {verdict} |")
        table[key] = {"label": label, "per_seed": values, "mean": mean, "sd": spread,
                      "target": verdict or None}
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"benchmark": "fed_vs_central, issue 12's targets over data seeds",
                       "data_seeds": seeds, "files": args.results, "measures": table}, fh,
                      indent=1)
    if len(runs) > 1 and len(set(seeds)) == 1:
        run_to_run(runs)


if __name__ == "__main__":
    main()
