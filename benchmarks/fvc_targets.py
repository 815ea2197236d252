"""Issue 12's targets 1-5, read from a fed_vs_central results file (no training).

    .venv/bin/python benchmarks/fvc_targets.py benchmarks/results/fed_vs_central.json
"""

import json
import sys

TASKS = ("mortality", "readmission_30d", "long_los", "icu_transfer")


def main(path: str) -> None:
    d = json.load(open(path))

    def auroc(arm, where, task, method="probe k=all"):
        return d["evaluation"][arm][where]["summary"][task]["methods"][method]["auroc"]

    sites = [h["name"] for h in d["hospitals"] if not h["left_out"]]
    left = next(h["name"] for h in d["hospitals"] if h["left_out"])
    cells = [(s, t) for s in sites for t in TASKS]
    above_counts = sum(auroc("a", s, t) >= auroc("b", s, t, "counts k=all") for s, t in cells)
    gaps = [auroc("a", s, t) - auroc("b", s, t) for s, t in cells]
    left_gaps = [auroc("a", left, t) - auroc("b", left, t) for t in TASKS]
    vs_alone = [auroc("b", w, t) >= auroc(f"c:{s}", w, t)
                for s in sites for w in (s, left) for t in TASKS]
    vs_no_anchor = [auroc("b", w, t) >= auroc("d", w, t) - 0.01
                    for w in [*sites, left] for t in TASKS]
    history = d["training"]["b"]["history"]
    first, last = history[0]["anchor_loss"], history[-1]["anchor_loss"]
    zero = d["zero_shot"][left]

    def verdict(ok: bool) -> str:
        return "met" if ok else "not met"

    print(f"1. (a) >= counts in {above_counts} of 12 in-federation cells (>= 10): "
          f"{verdict(above_counts >= 10)}")
    mean_in, mean_left, worst = sum(gaps) / 12, sum(left_gaps) / 4, max(gaps + left_gaps)
    print(f"2. mean (a)-(b): in-federation {mean_in:+.3f} (<= 0.03), left-out {mean_left:+.3f} "
          f"(<= 0.05), worst cell {worst:+.3f} (<= 0.08): "
          f"{verdict(mean_in <= 0.03 and mean_left <= 0.05 and worst <= 0.08)}")
    print(f"3. (b) >= (c) in {sum(vs_alone)} of {len(vs_alone)} (>= 22): "
          f"{verdict(sum(vs_alone) >= 22)}")
    print(f"4. (b) >= (d) - 0.01 in {sum(vs_no_anchor)} of {len(vs_no_anchor)} (>= 14); anchor "
          f"loss {first:.2f} -> {last:.2f} ({(last / first - 1) * 100:+.0f}%, <= +5%): "
          f"{verdict(sum(vs_no_anchor) >= 14 and last <= first * 1.05)}")
    for task in ("mortality", "long_los"):
        r = zero[task]
        print(f"5. {task}: zero-shot {r['zero_shot_auroc']:.3f} vs probe "
              f"{r['probe_all_auroc_same_rows']:.3f} on the same rows (ratio {r['ratio']:.2f}, "
              f">= 0.9), undecided {r['truncated_share']:.0%} (<= 5%)")
    ok = (all(zero[t]["ratio"] >= 0.9 and zero[t]["truncated_share"] <= 0.05
              for t in ("mortality", "long_los")) and zero["mortality"]["zero_shot_auroc"] >= 0.75)
    print(f"5. overall (mortality also >= 0.75 absolute): {verdict(ok)}")


if __name__ == "__main__":
    main(sys.argv[1])
