"""outcome_from_task reads the label window of ACES task configs: codes, window relative to
the prediction time, value condition, window-closing events; unsupported forms are refused."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from fedehr.shared.clinical.query import outcome_from_task, parse_duration
from fedehr.shared.errors import ConfigError

PREDICATES = {
    "admission": {"code": {"regex": "^HOSPITAL_ADMISSION//"}},
    "discharge": {"code": {"regex": "^HOSPITAL_DISCHARGE//"}},
    "death": {"code": "MEDS_DEATH"},
    "discharge_or_death": {"expr": "or(discharge, death)"},
    "high_creatinine": {"code": {"any": ["LAB//2160-0//mg/dL", "LAB//50912//mg/dL"]},
                        "value_min": 2.0, "value_min_inclusive": False},
}


def mortality_24h() -> dict:
    """In-hospital mortality predicted 24 h after admission (as tasks/mortality.yaml)."""
    return {"predicates": PREDICATES, "trigger": "admission", "windows": {
        "input": {"start": None, "end": "trigger + 24h", "index_timestamp": "end"},
        "first_day": {"start": "trigger", "end": "start + 24h",
                      "has": {"discharge_or_death": "(None, 0)"}},
        "target": {"start": "first_day.end", "end": "start -> discharge_or_death",
                   "label": "death"}}}


def test_event_bound_label_window_closes_at_its_predicate():
    outcome = outcome_from_task(mortality_24h(), max_horizon=timedelta(days=90))
    assert outcome.codes == ("MEDS_DEATH",)
    assert outcome.offset == timedelta(0)  # the target starts at the prediction time
    assert outcome.horizon == timedelta(days=90)  # capped
    assert outcome.is_stop("HOSPITAL_DISCHARGE//HOME") and outcome.is_stop("MEDS_DEATH")
    assert outcome.index_codes == ()  # a regex trigger has no code list


def test_fixed_window_relative_to_the_prediction_time():
    task = {"predicates": PREDICATES, "trigger": "admission", "windows": {
        "input": {"start": None, "end": "trigger + 6h", "index_timestamp": "end"},
        "gap": {"start": "input.end", "end": "start + 18h"},
        "target": {"start": "gap.end", "end": "start + 2d", "label": "high_creatinine"}}}
    outcome = outcome_from_task(task)
    assert outcome.offset == timedelta(hours=18)
    assert outcome.horizon == timedelta(hours=18 + 48)
    assert set(outcome.codes) == {"LAB//2160-0//mg/dL", "LAB//50912//mg/dL"}
    assert not outcome.matches_value(2.0) and outcome.matches_value(2.01)
    at = datetime(2020, 1, 1)
    assert outcome.window(at) == (at + timedelta(hours=18), at + timedelta(hours=66))


def test_patterns_match_codes():
    task = {"predicates": PREDICATES, "trigger": "discharge", "windows": {
        "input": {"start": None, "end": "trigger", "index_timestamp": "end"},
        "target": {"start": "input.end", "end": "start + 30d", "label": "admission"}}}
    outcome = outcome_from_task(task)
    assert outcome.horizon == timedelta(days=30)
    assert outcome.matches_code("HOSPITAL_ADMISSION//EMERGENCY//ER")
    assert not outcome.matches_code("ICU_ADMISSION//MICU")


def test_the_projects_task_files_are_read(tmp_path):
    """The ACES tasks shipped in fedehr/shared/clinical/tasks with the synthetic predicates."""
    labels = pytest.importorskip("fedehr.shared.clinical.labels")
    preds = labels.dataset_predicates(labels.predicates_path("synthetic", None))
    outcome = outcome_from_task(labels.load_task("readmission_30d").config, predicates=preds)
    assert outcome.horizon == timedelta(days=30)
    assert outcome.matches_code("HOSPITAL_ADMISSION//EMERGENCY//EMERGENCY_ROOM")
    mortality = outcome_from_task(labels.load_task("mortality").config, predicates=preds)
    assert mortality.matches_code("MEDS_DEATH") and mortality.stop_codes + mortality.stop_patterns


@pytest.mark.parametrize("change, message", [
    (lambda t: t["windows"]["target"].pop("label"), "exactly one window with a label"),
    (lambda t: t["predicates"].update(death={"expr": "and(admission, discharge)"}), "and"),
    (lambda t: t["windows"]["target"].update(label="nothing"), "unknown predicate"),
    (lambda t: t["windows"]["target"].update(end="start + 30 parsecs"), "unit"),
])
def test_unsupported_configs_are_refused_with_the_key(change, message):
    task = mortality_24h()
    task["predicates"] = dict(PREDICATES)
    task["windows"] = {k: dict(v) for k, v in task["windows"].items()}
    change(task)
    with pytest.raises(ConfigError, match=message):
        outcome_from_task(task)


def test_durations():
    assert parse_duration("2h30m") == timedelta(hours=2, minutes=30)
    assert parse_duration("30 days") == timedelta(days=30)
    assert parse_duration("1 week") == timedelta(days=7)
    with pytest.raises(ConfigError):
        parse_duration("soon")
