"""The federated-vs-central benchmark's own logic: evaluation views and target checks.

The benchmark itself (two federations, five trainings, eighteen evaluations)
is far too long for the suite; these tests cover the parts that decide what
is scored and what passes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from fedehr.shared.data import schema as S
from fedehr.shared.data.dataset import MEDSDataset

from .conftest import load_benchmark, tiny_windows

B = load_benchmark("fed_vs_central")


def _splits(root: Path) -> dict[int, str]:
    frame = pl.read_parquet(root / S.SPLITS_FILE)
    return dict(zip(frame[S.SUBJECT_ID].to_list(), frame["split"].to_list(), strict=True))


def test_training_site_view_tests_on_held_out_only_tuning_rows_stay_out(hospital, tmp_path):
    view = B.evaluation_view(hospital, tmp_path / "v", left_out=False, seed=0)
    before, after = _splits(hospital.path), _splits(view)
    assert before.keys() == after.keys()
    assert before == after  # the sweep chooses on tuning rows: they are never test rows
    assert S.TUNING in before.values()


def test_training_site_view_can_add_the_tuning_rows_to_the_test_rows(hospital, tmp_path):
    view = B.evaluation_view(hospital, tmp_path / "v", left_out=False, seed=0, with_tuning=True)
    before, after = _splits(hospital.path), _splits(view)
    for subject, split in before.items():
        assert after[subject] == (S.TRAIN if split == S.TRAIN else S.HELD_OUT)
    events = MEDSDataset.open(view).scan().collect()  # the same events, through the links
    assert events.height == MEDSDataset.open(hospital.path).scan().collect().height


def test_left_out_view_splits_all_patients_about_in_half(hospital, tmp_path):
    view = B.evaluation_view(hospital, tmp_path / "v", left_out=True, seed=0)
    splits = list(_splits(view).values())
    assert set(splits) == {S.TRAIN, S.HELD_OUT}
    assert 0.35 < splits.count(S.HELD_OUT) / len(splits) < 0.65
    assert _splits(view) == _splits(B.evaluation_view(hospital, tmp_path / "w", left_out=True,
                                                      seed=0))


def test_rank_auroc_is_sklearns_auroc_ties_included():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(2)
    y = rng.random(200) < 0.2
    p = np.round(y * 0.3 + rng.random(200), 1)  # coarse: many ties
    assert B.rank_auroc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_paired_gap_is_zero_for_the_same_predictions_and_signed_otherwise():
    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.3
    good = y + rng.normal(0, 0.5, 300)
    noise = rng.normal(0, 1, 300)
    gap, lo, hi = B.paired_gap(y, good, good)
    assert gap == lo == hi == 0.0
    gap, lo, hi = B.paired_gap(y, good, noise)
    assert gap > 0.2 and lo > 0 and lo <= gap <= hi


def test_zero_shot_is_scored_beside_the_probe_on_its_own_rows_and_unanswered_rows_left_out():
    from argparse import Namespace

    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    y = rng.random(100) < 0.3
    probe = y + rng.normal(0, 1, 100)
    rows = np.sort(rng.choice(100, 40, replace=False))
    prob = np.where(y[rows], 0.6, 0.4) + rng.normal(0, 0.2, 40)
    prob[:3] = np.nan  # rows with no decided continuation
    answers = {"mortality": {"y": y, "rows": rows, "probability": prob, "positives": 12,
                             "estimator": "expected", "truncated_share": 0.05,
                             "left_early": 0.0, "budget": 64, "horizon_days": 30.0,
                             "reach_days": {}, "generated_tokens": 100, "seconds": 1.0},
               "long_los": {"y": np.zeros(100, bool)}}  # one class: nothing was asked
    out = B.against_probe(answers, {"mortality": (y, probe)}, Namespace(zero_shot_samples=8))
    m = out["mortality"]
    kept = rows[3:]
    assert m["zero_shot_auroc"] == pytest.approx(roc_auc_score(y[kept], prob[3:]), abs=1e-4)
    assert m["probe_all_auroc_same_rows"] == pytest.approx(roc_auc_score(y[kept], probe[kept]),
                                                           abs=1e-4)
    assert (m["rows"], m["unanswered_rows"], m["truncated_share"]) == (40, 3, 0.05)
    assert "note" in out["long_los"]
    with pytest.raises(RuntimeError, match="not the labels' rows"):
        B.against_probe(answers, {"mortality": (~y, probe)}, Namespace(zero_shot_samples=8))


def _evals(values: dict[str, dict[str, float]]) -> dict:
    """arm -> set -> the summary shape `target_checks` reads (one task)."""
    return {arm: {where: {"summary": {"mortality": {"methods": {"probe k=all": {"auroc": v}}}}}
                  for where, v in per.items()} for arm, per in values.items()}


def test_target_checks_judge_only_sets_with_enough_of_each_class(monkeypatch):
    monkeypatch.setattr(B, "TASKS", ("mortality",))
    rng = np.random.default_rng(1)
    y_big = rng.random(400) < 0.3
    y_small = np.array([True] * 3 + [False] * 50)
    score = y_big + rng.normal(0, 0.4, 400)
    worse = y_big + rng.normal(0, 3.0, 400)
    preds = {"a": {"s1": {"mortality": (y_big, score)}, "out": {"mortality": (y_big, score)},
                   "s2": {"mortality": (y_small, np.linspace(0, 1, 53))}},
             "b": {"s1": {"mortality": (y_big, worse)}, "out": {"mortality": (y_big, score)},
                   "s2": {"mortality": (y_small, np.linspace(1, 0, 53))}}}
    evals = _evals({"a": {"s1": 0.9, "s2": 0.9, "out": 0.8}, "b": {"s1": 0.7, "s2": 0.1,
                                                                   "out": 0.8},
                    "c:s1": {"s1": 0.6, "out": 0.75}, "c:s2": {"s2": 0.95, "out": 0.7}})
    zero = {"out": {"mortality": {"ratio": 0.95, "constant": True, "zero_shot_auroc": 0.5,
                                  "probe_all_auroc_same_rows": 0.52, "rows": 40,
                                  "positives": 20, "truncated_share": 1.0}}}
    checks = {c["target"]: c for c in B.target_checks(evals, preds, ["s1", "s2"], "out", zero)}
    assert not checks[1]["pass"]  # s1: (b) far below (a); s2 is too small to judge
    assert "s2: not judged" in checks[1]["text"]
    assert checks[2]["pass"]  # (b) beats (c) everywhere it is judged; s2 is not judged
    assert not checks[3]["pass"]  # a constant zero-shot answer never passes


def test_a_kept_arm_is_reused_only_under_the_same_training_settings(tmp_path):
    import torch

    from fedehr.shared.model import ModelConfig

    config = ModelConfig.preset("tiny", 40, max_len=16, note_dim=0, image_dim=0)
    args = B.parse(["--central-steps", "7"])
    model = B.initial_model(config)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # "trained": unlike the initial weights
    B.keep_arm(tmp_path, "c:hospital_a", args, model, {"seconds": 3.0})

    evaluated_otherwise = B.parse(["--central-steps", "7", "--test-rows", "tuning+held-out"])
    again, training = B.kept_arm(tmp_path, "c:hospital_a", evaluated_otherwise, config)
    assert training == {"seconds": 3.0}
    for kept, loaded in zip(model.state_dict().values(), again.state_dict().values(),
                            strict=True):
        assert torch.equal(kept, loaded)
    trained_otherwise = B.parse(["--central-steps", "8"])
    assert B.kept_arm(tmp_path, "c:hospital_a", trained_otherwise, config) is None
    assert B.kept_arm(tmp_path, "a", args, config) is None  # never kept


def test_two_runs_of_one_seed_get_the_run_to_run_table(tmp_path, capsys):
    """fvc_targets: runs of the same data seed also show how far each arm's cells moved."""
    targets = load_benchmark("fvc_targets")

    def run(shift: float) -> dict:
        cells = {"hospital_a": {"summary": {
            task: {"methods": {"probe k=all": {"auroc": 0.6 + shift * i}}}
            for i, task in enumerate(("mortality", "long_los"))}}}
        return {"evaluation": {"a": cells, "b": cells}}

    targets.run_to_run([run(0.0), run(0.1)])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| (a) | 2")]
    # mortality stays, long stay rises 0.1: mean move +0.05, largest +0.1 in long stay
    assert rows == ["| (a) | 2 | 0.650 | +0.050 | 0.071 | +0.100 (hospital_a long_los) |"]


def test_central_arm_stops_early_on_the_tuning_windows_never_on_test_rows(hospital, tmp_path):
    with pytest.raises(SystemExit):  # tuning rows as test rows would be chosen on
        B.parse(["--central-stop-early", "--test-rows", "tuning+held-out"])
    _, _, windows = tiny_windows(hospital, tmp_path)
    splits = list(_splits(hospital.path).values())
    assert len(windows.train) == splits.count(S.TRAIN)
    assert len(windows.tuning) == splits.count(S.TUNING) > 0
