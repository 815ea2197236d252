"""`fedehr model ask` end to end on a tiny signed checkpoint: one patient with its explanation,
a cohort written in the label schema, and user mistakes reported in one line."""

from __future__ import annotations

import polars as pl
import pytest

from fedehr.shared.cli import main
from tests.shared.clinical import planted


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return planted.world(tmp_path_factory)


def run(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main(["model", "ask", *args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def base(world) -> list[str]:
    return ["--checkpoint", str(world.checkpoint), "--data", str(world.dataset.root),
            "--samples", "8"]


def test_one_patient_gets_resolved_codes_a_probability_and_an_explanation(world, capsys):
    code, out, err = run(capsys, *base(world), "--patient", "4", "--yes", "--explain", "4",
                         "--prompt", "cardiac arrest within 1 day after alpha procedure")
    assert code == 0, err
    assert "EVENT//CARDIAC_ARREST (Cardiac arrest)" in out  # shown back in clinical words
    assert "PROC//ALPHA (Alpha procedure)" in out
    assert "probability" in out and "95% CI" in out and "of 8 continuations" in out
    assert "What moved it most" in out and "Alpha procedure" in out.split("What moved")[1]
    assert "twice" in out.split("What moved")[1]  # says which changes are beyond the noise


def test_an_answer_with_no_decided_continuation_says_undecided_not_zero(world, capsys):
    code, out, err = run(capsys, *base(world), "--patient", "3", "--yes", "--explain", "2",
                         "--max-new-tokens", "1",
                         "--prompt", "cardiac arrest within 90 days after beta procedure")
    assert code == 0, err
    assert "undecided" in out and "none of 8 continuations reached the end" in out
    assert "0 of 8 continuations reached the end of the window" in out
    assert "0.00" not in out and "No explanation" in out


def test_cohort_from_a_patient_list_writes_the_label_schema_plus_probability(world, capsys,
                                                                             tmp_path):
    listed = planted.labels([2, 3, 4]).with_columns(
        pl.Series("boolean_value", [True, False, True]))
    listed.write_parquet(tmp_path / "patients.parquet")
    saved = tmp_path / "prompt.yaml"
    saved.write_text("outcome: cardiac arrest\nwithin: 1d\nafter: procedure\n")
    code, out, err = run(capsys, *base(world), "--patients", str(tmp_path / "patients.parquet"),
                         "--prompt-file", str(saved), "--out", str(tmp_path / "pred.parquet"),
                         "--yes")
    assert code == 0, err
    pred = pl.read_parquet(tmp_path / "pred.parquet")
    assert pred.columns == ["subject_id", "prediction_time", "boolean_value",
                            "predicted_boolean_value", "predicted_boolean_probability",
                            "ci_low", "ci_high"]
    assert pred["subject_id"].to_list() == [2, 3, 4]
    assert pred["boolean_value"].to_list() == [True, False, True]
    assert pred["predicted_boolean_probability"].is_between(0, 1).all()
    assert "patients / s" in out


def test_cohort_mode_takes_prediction_times_from_the_compiled_task(world, capsys, tmp_path):
    pytest.importorskip("aces")
    code, out, err = run(capsys, *base(world), "--cohort", "--split", "held_out", "--yes",
                         "--prompt", "cardiac arrest within 1 day after beta procedure",
                         "--out", str(tmp_path / "pred.parquet"))
    assert code == 0, err
    pred = pl.read_parquet(tmp_path / "pred.parquet")
    assert pred.height > 0 and (pred["subject_id"] % 2 == 1).all()  # beta patients only
    assert pred["boolean_value"].to_list() == [False] * pred.height


@pytest.mark.parametrize("args, message", [
    (["--patient", "4", "--yes", "--prompt", "cardiac arrest soon"], "within DURATION"),
    (["--patient", "4", "--prompt", "cardiac arrest within 1 day"], "--yes"),
    (["--patient", "999", "--yes", "--prompt", "cardiac arrest within 1 day"], "no events"),
    (["--yes", "--prompt", "cardiac arrest within 1 day"], "--patient"),
    (["--patient", "4", "--yes", "--prompt", "zebra within 1 day"], "no code matches"),
    (["--cohort", "--yes", "--prompt", "cardiac arrest within 1 day", "--out", "x.parquet"],
     "index event"),
])
def test_mistakes_are_one_line_errors(world, capsys, args, message):
    code, out, err = run(capsys, *base(world), *args)
    assert code != 0
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 3  # one message (rich may wrap it)
