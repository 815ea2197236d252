"""Task labels (ACES) against what the events say when counted by hand, plus planted
patients for the readmission censoring guard."""

from __future__ import annotations

from datetime import datetime, timedelta

import meds
import polars as pl
import pyarrow as pa
import pytest

from fedehr.shared.clinical.labels import (
    TASKS,
    detect_predicate_set,
    extract_labels,
    extract_many,
    load_task,
)
from fedehr.shared.data.dataset import MEDSDataset
from fedehr.shared.data.synth import synthesize
from fedehr.shared.data.writer import MEDSWriter
from fedehr.shared.errors import ConfigError

DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> MEDSDataset:
    root = tmp_path_factory.mktemp("synth")
    summary = synthesize(root, sites=1, patients=150, seed=3)[0]
    return MEDSDataset.open(summary.path)


@pytest.fixture(scope="module")
def labels(site) -> dict[str, pl.DataFrame]:
    return dict(zip(TASKS, extract_many(site, TASKS, "synthetic"), strict=True))


def stays(site: MEDSDataset) -> pl.DataFrame:
    """Each admission paired with the next discharge, counted without ACES."""
    ev = site.scan().collect()
    adm = (ev.filter(pl.col("code").str.starts_with("HOSPITAL_ADMISSION//"))
           .select("subject_id", pl.col("time").alias("admit")).sort("subject_id", "admit"))
    dis = (ev.filter(pl.col("code").str.starts_with("HOSPITAL_DISCHARGE//"))
           .select("subject_id", pl.col("time").alias("discharge"),
                   (pl.col("code") == "HOSPITAL_DISCHARGE//DIED").alias("died"))
           .sort("subject_id", "discharge"))
    assert adm.height == dis.height
    assert adm["subject_id"].equals(dis["subject_id"])
    out = adm.with_columns(dis["discharge"], dis["died"])
    icu = ev.filter(pl.col("code").str.starts_with("ICU_ADMISSION//")).select(
        "subject_id", pl.col("time").alias("icu"))
    with_icu = (out.join(icu, on="subject_id", how="left")
                .filter((pl.col("icu") > pl.col("admit")) & (pl.col("icu") <= pl.col("discharge")))
                .select("subject_id", "admit").unique().with_columns(pl.lit(True).alias("icu")))
    out = out.join(with_icu, on=["subject_id", "admit"], how="left").with_columns(
        pl.col("icu").fill_null(False))
    last = ev.group_by("subject_id").agg(pl.col("time").max().alias("record_end"))
    return out.join(last, on="subject_id").sort("subject_id", "admit")


def as_dict(frame: pl.DataFrame) -> dict[tuple[int, datetime], bool]:
    return {(s, t): bool(v) for s, t, v in frame.select(
        "subject_id", "prediction_time", "boolean_value").iter_rows()}


def test_labels_are_in_the_meds_label_schema(labels):
    for frame in labels.values():
        assert frame.columns == ["subject_id", "prediction_time", "boolean_value"]
        meds.LabelSchema.align(frame.to_arrow())  # raises when the schema does not fit
        assert frame.to_arrow().schema.field("prediction_time").type == pa.timestamp("us")
        assert frame.select("subject_id", "prediction_time").is_unique().all()


def test_icu_transfer_matches_the_stays(site, labels):
    s = stays(site)
    expected = {(r["subject_id"], r["admit"]): r["icu"] for r in s.iter_rows(named=True)}
    assert as_dict(labels["icu_transfer"]) == expected
    assert 0 < sum(expected.values()) < len(expected)


def test_mortality_and_long_stay_match_the_stays_alive_at_24_hours(site, labels):
    s = stays(site).filter(pl.col("discharge") > pl.col("admit") + DAY)
    mortality = {(r["subject_id"], r["admit"] + DAY): r["died"] for r in s.iter_rows(named=True)}
    long_stay = {(r["subject_id"], r["admit"] + DAY): r["discharge"] - r["admit"] > 7 * DAY
                 for r in s.iter_rows(named=True)}
    assert as_dict(labels["mortality"]) == mortality
    assert as_dict(labels["long_los"]) == long_stay
    assert sum(mortality.values()) > 0 and sum(long_stay.values()) > 0


def test_readmission_counts_survived_discharges_observed_for_30_days(site, labels):
    s = stays(site)
    next_admit = s.with_columns(pl.col("admit").shift(-1).over("subject_id").alias("next"))
    expected = {}
    for r in next_admit.filter(~pl.col("died")).iter_rows(named=True):
        if r["record_end"] <= r["discharge"] + 30 * DAY:
            continue  # censored: the record ends before the window closes
        readmitted = r["next"] is not None and r["next"] <= r["discharge"] + 30 * DAY
        expected[(r["subject_id"], r["discharge"])] = readmitted
    assert as_dict(labels["readmission_30d"]) == expected
    assert 0 < sum(expected.values()) < len(expected)


def planted(tmp_path) -> MEDSDataset:
    """Four patients discharged alive on day 3: lost to follow-up (1), seen again on day
    60 without readmission (2), readmitted on day 10 and seen on day 90 (3), readmitted
    on day 10 with a record ending on day 15 (4)."""
    t0 = datetime(2021, 3, 1, 9, 0)
    rows = []

    def stay(sid, start, end):
        rows.append((sid, t0 + start * DAY, "HOSPITAL_ADMISSION//EMERGENCY//EMERGENCY_ROOM"))
        rows.append((sid, t0 + end * DAY, "HOSPITAL_DISCHARGE//HOME"))

    for sid in (1, 2, 3, 4):
        rows.append((sid, None, "GENDER//F"))
        rows.append((sid, t0 - 20000 * DAY, "MEDS_BIRTH"))
        stay(sid, 0, 3)
    rows.append((2, t0 + 60 * DAY, "LAB//2160-0//mg/dL"))
    stay(3, 10, 14)
    rows.append((3, t0 + 90 * DAY, "LAB//2160-0//mg/dL"))
    stay(4, 10, 15)
    frame = pl.DataFrame(rows, schema={"subject_id": pl.Int64, "time": pl.Datetime("us"),
                                       "code": pl.String}, orient="row")
    with MEDSWriter(tmp_path / "planted", dataset_name="planted", etl_name="tests") as w:
        w.add_events(frame)
    return MEDSDataset.open(tmp_path / "planted")


def test_censoring_guard_excludes_patients_whose_record_ends_inside_the_window(tmp_path):
    site = planted(tmp_path)
    got = as_dict(extract_labels(site, "readmission_30d", "synthetic"))
    t0 = datetime(2021, 3, 1, 9, 0)
    assert got == {
        (2, t0 + 3 * DAY): False,  # seen on day 60, not readmitted
        (3, t0 + 3 * DAY): True,  # readmitted on day 10, seen on day 90
        (3, t0 + 14 * DAY): False,  # second discharge: seen 76 days later
    }  # 1 (lost to follow-up) and 4 (record ends on day 15) are censored


def test_predicate_set_is_detected_and_unknown_names_are_refused(site, tmp_path):
    assert detect_predicate_set(site) == "synthetic"
    with pytest.raises(ConfigError, match="unknown task"):
        load_task("sepsis")
    with pytest.raises(ConfigError, match="unknown predicate set"):
        extract_labels(site, "mortality", "eicu")
    with pytest.raises(ConfigError, match="cannot tell which codes"):
        detect_predicate_set(planted(tmp_path))


def test_a_task_yaml_by_path_gives_the_same_labels(site, labels):
    path = load_task("icu_transfer").path
    assert as_dict(extract_labels(site, path)) == as_dict(labels["icu_transfer"])
