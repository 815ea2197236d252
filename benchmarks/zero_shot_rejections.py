"""What do the rejected continuations of a zero-shot answer carry? (issue 12, target 5)

A continuation that puts a discharge, a death or the outcome before the prediction
time contradicts the history (the patient was in hospital and alive then) and is
rejected (shared/clinical/zero_shot.py): the answer is conditioned on the known
stay. This scores, on a saved model and the sweep's balanced draw of tuning rows
(never test rows), per site and task:

    conditional     the answer as fedehr gives it (rejected continuations left out)
    unconditional   rejected continuations read as "no outcome" (mortality) or "short
                    stay" (long stay): conditional x (1 - rejected share), a ranking
                    score, not a probability for a patient known to be in hospital
    rejected        the rejected share alone (1 - share, so higher means the outcome)

and the mean rejected share of positive and negative rows.

`--conditioning rejection,weighted` scores the alternative beside it: the leaving
tokens are masked before the prediction time and each continuation is weighted by
its chance of not leaving (the same conditional estimand, nothing discarded); its
"rejected share" is then the model's chance of having left early (1 - the mean
weight). `effective` is the mean effective count per row (under rejection: the
decided continuations), `generated_tokens` and `seconds` what the answers cost.

    .venv/bin/python benchmarks/zero_shot_rejections.py --model F.pt --data-seed 0 \\
        --samples 64 --conditioning rejection,weighted --out F.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def score_site(model, world, name: str, tasks, *, rows: int, samples: int,
               conditioning: str) -> list[dict]:
    import numpy as np
    import polars as pl
    from dp_recipe_sweep import balanced_rows
    from sklearn.metrics import roc_auc_score

    from fedehr.shared.clinical import labels as L
    from fedehr.shared.clinical import zero_shot
    from fedehr.shared.clinical.evaluate import subject_split
    from fedehr.shared.clinical.query import outcome_from_task
    from fedehr.shared.data import schema as S

    dataset, mapping = world["eval"][name]
    pred_path = L.predicates_path(None, dataset)
    labels = L.extract_many(dataset, tasks, pred_path)
    subjects = np.concatenate([lab[L.SUBJECT_ID].to_numpy() for lab in labels])
    _, tuning, _ = subject_split(dataset, subjects, test_split=S.TUNING)
    out = []
    for task, lab in zip(tasks, labels, strict=True):
        lab = lab.filter(pl.col(L.SUBJECT_ID).is_in(list(tuning)))
        y_all = lab[L.BOOLEAN_VALUE].to_numpy().astype(bool)
        picked = balanced_rows(y_all, rows)
        y = y_all[picked]
        outcome = outcome_from_task(task.config, predicates=L.dataset_predicates(pred_path))
        answer = zero_shot.predict_detailed(model, world["vocab"], dataset,
                                            lab[picked.tolist()], outcome, samples=samples,
                                            seed=0, batch_size=256, mapping=mapping,
                                            conditioning=conditioning)
        frame, sim = answer.frame, answer.simulation
        p = frame["probability"].cast(pl.Float64).to_numpy()
        rejected = frame["left_early"].to_numpy()
        # long stay is the complement of "discharged or died within the window": a
        # rejected continuation (a discharge before the prediction time) is a short stay
        p = 1.0 - p if task.label_negated else p
        ok = ~np.isnan(p)
        scores = {"conditional": p, "unconditional": p * (1 - rejected),
                  "rejected": 1 - rejected}
        out.append({"site": name, "task": task.name, "conditioning": conditioning,
                    "rows": int(len(y)), "positives": int(y.sum()),
                    "effective": round(float(frame["effective"].mean()), 2),
                    "generated_tokens": sim.generated_tokens,
                    "seconds": round(sim.seconds, 1),
                    **{k: round(float(roc_auc_score(y[ok], v[ok])), 3)
                       for k, v in scores.items()},
                    "rejected_share_positives": round(float(rejected[y].mean()), 3),
                    "rejected_share_negatives": round(float(rejected[~y].mean()), 3)})
    return out


def main(argv=None) -> int:
    import torch
    from dp_recipe_sweep import TASKS, build_world, world_arguments

    from fedehr.shared.clinical import labels as L

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    world_arguments(parser)
    parser.add_argument("--model", type=Path, required=True,
                        help="weights saved by dp_recipe_sweep.py --save-models or "
                             "zero_shot_learning_curve.py --save")
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--conditioning", default="rejection",
                        help="comma-separated: rejection, weighted (each scored in turn)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory(prefix="fedehr-zs-rejections-") as tmp:
        world = build_world(Path(tmp), args)
        model = world["initial"](0)
        model.load_state_dict(torch.load(args.model))
        tasks = [L.load_task(t) for t in TASKS]
        print("| site | task | conditioning | positives / rows | effective count | conditional "
              "| unconditional | rejected share alone | rejected share (positives / negatives) |")
        for name in world["eval"]:
            for r in (r for c in args.conditioning.split(",")
                      for r in score_site(model, world, name, tasks, rows=args.rows,
                                          samples=args.samples, conditioning=c)):
                rows.append(r)
                print(f"| {name} | {r['task']} | {r['conditioning']} | "
                      f"{r['positives']} / {r['rows']} | {r['effective']:.1f} | "
                      f"{r['conditional']:.3f} | {r['unconditional']:.3f} | "
                      f"{r['rejected']:.3f} | {r['rejected_share_positives']:.2f} / "
                      f"{r['rejected_share_negatives']:.2f} |", flush=True)
    args.out.write_text(json.dumps({"model": args.model.name, "data_seed": args.data_seed,
                                    "samples": args.samples, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
