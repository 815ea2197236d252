"""The prompt grammar, its saved YAML form, and compilation to an ACES task config that
`outcome_from_task` reads back."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest

from fedehr.shared.clinical.concepts import CodeIndex
from fedehr.shared.clinical.prompt import (
    load_prompt_file,
    parse_prompt,
    resolve_prompt,
)
from fedehr.shared.clinical.query import outcome_from_task
from fedehr.shared.errors import ConfigError

CODES = pl.DataFrame({
    "code": ["MEDS_DEATH", "HOSPITAL_ADMISSION//EMERGENCY", "HOSPITAL_DISCHARGE//HOME",
             "HOSPITAL_DISCHARGE//DIED", "ICU_ADMISSION//MICU", "LAB//2160-0//mg/dL",
             "DIAGNOSIS//ICD//10//I509"],
    "description": ["Death", "Hospital admission, emergency",
                    "Hospital discharge, disposition home", "Hospital discharge, disposition died",
                    "ICU admission to the MICU", "Creatinine [Mass/volume] in Serum or Plasma",
                    "Heart failure, unspecified"],
})


@pytest.fixture
def index() -> CodeIndex:
    return CodeIndex.for_dataset(CODES)


def test_outcome_window_and_index_are_read():
    p = parse_prompt("death within 30 days after discharge")
    assert (p.outcome, p.within, p.index, p.value, p.until) == (
        "death", timedelta(days=30), "discharge", None, None)
    p = parse_prompt("Risk of readmission within 2 weeks of discharge?")
    assert (p.outcome, p.within, p.index) == ("readmission", timedelta(days=14), "discharge")


def test_value_conditions_are_read():
    p = parse_prompt("creatinine above 2 mg/dL within 48 hours of ICU admission")
    assert (p.outcome, p.within, p.index) == ("creatinine", timedelta(hours=48), "ICU admission")
    assert (p.value.min_value, p.value.min_inclusive, p.value.max_value, p.value.unit) == (
        2.0, False, None, "mg/dL")
    p = parse_prompt("creatinine >= 1.5 within 1 day")
    assert (p.value.min_value, p.value.min_inclusive, p.index) == (1.5, True, None)
    p = parse_prompt("creatinine between 1.5 and 3 mg/dL within 2d after admission")
    assert (p.value.min_value, p.value.max_value) == (1.5, 3.0)


def test_event_bound_window_and_cohort_are_read():
    p = parse_prompt("death before discharge after admission for patients with heart failure")
    assert (p.outcome, p.until, p.index, p.within, p.cohort) == (
        "death", "discharge", "admission", None, "heart failure")


@pytest.mark.parametrize("text", ["death soon", "", "within 30 days after discharge",
                                  "death within thirty days", "death within 30 parsecs"])
def test_unreadable_prompts_show_the_accepted_forms(text):
    with pytest.raises(ConfigError) as err:
        parse_prompt(text)
    assert err.value.where == "prompt"
    assert "within DURATION" in err.value.one_line() or "unit" in err.value.one_line()


def test_saved_prompt_forms_equal_the_sentence(tmp_path):
    structured = tmp_path / "a.yaml"
    structured.write_text("name: aki\noutcome: creatinine\nvalue: {above: 2, unit: mg/dL}\n"
                          "within: 48h\nafter: ICU admission\n")
    sentence = tmp_path / "b.yaml"
    sentence.write_text('prompt: "creatinine above 2 mg/dL within 48 hours of ICU admission"\n')
    a, b = load_prompt_file(structured), load_prompt_file(sentence)
    assert (a.outcome, a.value, a.within, a.index) == (b.outcome, b.value, b.within, b.index)
    assert a.name == "aki"
    bad = tmp_path / "c.yaml"
    bad.write_text("outcome: death\nwithin: 30d\nhorizon: 3\n")
    with pytest.raises(ConfigError, match="unknown keys"):
        load_prompt_file(bad)


def test_compiled_task_round_trips_through_outcome_from_task(index):
    prompt = parse_prompt("creatinine above 2 mg/dL within 48 hours of ICU admission")
    task = resolve_prompt(prompt, index).task_config()
    assert set(task) >= {"predicates", "trigger", "windows"}
    assert task["predicates"]["index_event"]["code"] == {"any": ["ICU_ADMISSION//MICU"]}
    outcome = outcome_from_task(task)
    assert outcome.codes == ("LAB//2160-0//mg/dL",)
    assert outcome.horizon == timedelta(hours=48) and outcome.offset == timedelta(0)
    assert (outcome.min_value, outcome.min_inclusive) == (2.0, False)
    assert outcome.matches_value(2.5) and not outcome.matches_value(2.0)
    assert outcome.index_codes == ("ICU_ADMISSION//MICU",)
    assert "creatinine > 2 mg/dL within 2 days" in outcome.clinical_words()


def test_before_compiles_to_an_event_bound_window(index):
    task = resolve_prompt(parse_prompt("death before discharge after admission"),
                          index).task_config()
    assert task["windows"]["target"]["end"] == "start -> window_end"
    outcome = outcome_from_task(task)
    assert outcome.codes == ("MEDS_DEATH",)
    assert set(outcome.stop_codes) == {"HOSPITAL_DISCHARGE//HOME", "HOSPITAL_DISCHARGE//DIED"}
    assert outcome.is_stop("HOSPITAL_DISCHARGE//HOME") and not outcome.is_stop("MEDS_DEATH")


def test_a_unit_the_codes_do_not_use_is_refused(index):
    with pytest.raises(ConfigError, match="recorded in mg/dL"):
        resolve_prompt(parse_prompt("creatinine above 180 umol/L within 2 days"), index)


def test_compiled_task_runs_in_aces(tmp_path):
    """The compiled dict is a real ACES config: es-aces extracts its labels."""
    pytest.importorskip("aces")
    from datetime import datetime

    import yaml

    from fedehr.shared.clinical.labels import extract_labels
    from fedehr.shared.data.writer import MEDSWriter

    t0 = datetime(2020, 1, 1)
    rows = [(1, t0, "HOSPITAL_ADMISSION//EMERGENCY"), (1, t0 + timedelta(days=3),
                                                      "HOSPITAL_DISCHARGE//HOME"),
            (1, t0 + timedelta(days=10), "MEDS_DEATH"),
            (2, t0, "HOSPITAL_ADMISSION//EMERGENCY"),
            (2, t0 + timedelta(days=2), "HOSPITAL_DISCHARGE//HOME")]
    frame = pl.DataFrame(rows, schema={"subject_id": pl.Int64, "time": pl.Datetime("us"),
                                       "code": pl.String}, orient="row")
    with MEDSWriter(tmp_path / "meds", dataset_name="t", etl_name="tests",
                    extra_metadata={}) as writer:
        writer.add_events(frame)
        writer.add_codes(CODES["code"].to_list(), CODES["description"].to_list())
    task = resolve_prompt(parse_prompt("death within 30 days after discharge"),
                          CodeIndex.for_dataset(CODES)).task_config()
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(task))
    (tmp_path / "preds.yaml").write_text(yaml.safe_dump({"predicates": task["predicates"]}))
    labels = extract_labels(tmp_path / "meds", tmp_path / "task.yaml", tmp_path / "preds.yaml")
    got = dict(zip(labels["subject_id"].to_list(), labels["boolean_value"].to_list(),
                   strict=True))
    assert got == {1: True, 2: False}
    assert labels["prediction_time"].to_list() == [t0 + timedelta(days=3),
                                                   t0 + timedelta(days=2)]


@pytest.mark.parametrize("body", [
    {"outcome": ["death"], "within": "30d"},
    {"outcome": "death", "within": "30d", "after": {"event": "discharge"}},
    {"outcome": "death", "within": "30d", "cohort": 7},
    {"outcome": "creatinine", "within": "30d", "value": {"above": float("nan")}},
    {"outcome": "creatinine", "within": "30d", "value": {"above": True}},
    {"outcome": "creatinine", "within": "30d", "value": {"between": 3}},
    {"outcome": "creatinine", "within": "30d", "value": {"above": 2, "unit": [1]}},
    {"outcome": "death", "within": "99999999999 days"},
])
def test_a_prompt_file_of_wrong_types_is_a_config_error(tmp_path, body):
    import yaml

    from fedehr.shared.clinical.prompt import load_prompt_file
    from fedehr.shared.errors import ConfigError

    path = tmp_path / "frage ä.yaml"
    path.write_text(yaml.safe_dump(body))
    with pytest.raises(ConfigError):
        load_prompt_file(path)
