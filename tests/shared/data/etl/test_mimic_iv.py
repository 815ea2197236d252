"""The MIMIC-IV ETL: official CSV layouts (2.2, 3.x, .csv.gz) in, a valid MEDS dataset out."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import meds
import polars as pl
import pyarrow.parquet as pq
import pytest
from rich.progress import Progress

from fedehr.shared.data import schema as S
from fedehr.shared.data.dataset import MEDSDataset
from fedehr.shared.data.etl.mimic_iv import convert, dotted_icd
from fedehr.shared.errors import DataError
from tests.fixtures.mimic_iv_fixture import H1, H3, S1, S2, S4, write_mimic_iv_fixture


def _events(dest: Path) -> pl.DataFrame:
    return MEDSDataset.open(dest).scan().collect()


def _at(events: pl.DataFrame, subject: int, code: str) -> list:
    rows = events.filter((pl.col(S.SUBJECT_ID) == subject) & (pl.col(S.CODE) == code))
    return rows[S.TIME].to_list()


def _admission(src: Path, hadm: int) -> dict:
    admissions = pl.read_csv(src / "hosp" / "admissions.csv", infer_schema=False)
    return admissions.filter(pl.col("hadm_id") == str(hadm)).row(0, named=True)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The v2.2 fixture converted once, read-only for the tests that share it."""
    root = tmp_path_factory.mktemp("mimic")
    fixture = write_mimic_iv_fixture(root / "src")
    summary = convert(fixture.root, root / "meds", chunk_rows=4)
    return fixture, summary, root / "meds"


def test_v22_layout_yields_the_community_codes_at_their_source_times(converted):
    fixture, _, dest = converted
    events = _events(dest)
    h1 = _admission(fixture.root, H1)
    assert _at(events, S1, "GENDER//F") == [None]
    assert _at(events, S1, "MEDS_BIRTH") == [datetime(2180 - 52, 1, 1)]
    assert _at(events, S1, "HOSPITAL_ADMISSION//URGENT//TRANSFER FROM HOSPITAL") == [
        datetime.fromisoformat(h1["admittime"])]
    assert _at(events, S1, "HOSPITAL_DISCHARGE//HOME") == [datetime.fromisoformat(h1["dischtime"])]
    assert _at(events, S1, "TRANSFER_TO//admit//Medicine") == [datetime(2180, 5, 6, 23, 30)]
    assert _at(events, S1, "TRANSFER_TO//discharge//UNK") == [datetime(2180, 5, 7, 17, 15)]
    assert _at(events, S1, "PROCEDURE//ICD//9//5491") == [datetime(2180, 5, 7)]
    assert _at(events, S1, "MEDICATION//START//Furosemide") == [datetime(2180, 5, 7)]
    assert _at(events, S1, "ICU_ADMISSION//Medical Intensive Care Unit (MICU)") == [
        datetime(2180, 6, 26, 21)]
    assert _at(events, S1, "ICU_DISCHARGE//Medical Intensive Care Unit (MICU)") == [
        datetime(2180, 6, 27, 18)]
    for code in ("LAB//220045//bpm", "INFUSION_START//225158", "INFUSION_END//225158",
                 "SUBJECT_FLUID_OUTPUT//226559//ml", "PROCEDURE//START//225459"):
        assert len(_at(events, S1, code)) == 1, code


def test_diagnoses_are_stamped_at_their_admission_discharge_time(converted):
    fixture, _, dest = converted
    events = _events(dest)
    for subject, hadm, codes in ((S1, H1, ["DIAGNOSIS//ICD//9//5723", "DIAGNOSIS//ICD//9//E8859"]),
                                 (S2, H3, ["DIAGNOSIS//ICD//10//I10", "DIAGNOSIS//ICD//10//E119"])):
        discharge = datetime.fromisoformat(_admission(fixture.root, hadm)["dischtime"])
        for code in codes:
            assert _at(events, subject, code) == [discharge]


def test_death_takes_the_admission_deathtime_before_the_date_only_dod(converted):
    fixture, _, dest = converted
    deathtime = _admission(fixture.root, 22841357)["deathtime"]
    assert _at(_events(dest), S1, S.DEATH_CODE) == [datetime.fromisoformat(deathtime)]
    assert _at(_events(dest), S2, S.DEATH_CODE) == []


def test_lab_values_go_to_numeric_value_or_else_text_value(converted):
    _, _, dest = converted
    labs = _events(dest).filter(pl.col(S.CODE).str.starts_with("LAB//"))
    by_code = {(r[S.SUBJECT_ID], r[S.CODE]): r for r in labs.iter_rows(named=True)}
    creatinine = by_code[(S1, "LAB//50912//mg/dL")]
    assert creatinine[S.NUMERIC_VALUE] == pytest.approx(1.1)
    assert creatinine[S.TEXT_VALUE] is None
    smear = by_code[(S1, "LAB//51266//UNK")]  # no unit -> UNK; text result
    assert smear[S.NUMERIC_VALUE] is None and smear[S.TEXT_VALUE] == "NORMAL"
    unparsable = by_code[(S2, "LAB//50912//mg/dL")]  # valuenum "1..2"
    assert unparsable[S.NUMERIC_VALUE] is None and unparsable[S.TEXT_VALUE] == "1..2"


def test_omr_blood_pressure_is_text_and_weight_is_numeric(converted):
    _, _, dest = converted
    omr = _events(dest).filter(pl.col(S.CODE).is_in(["Blood Pressure", "Weight (Lbs)"]))
    values = {r[S.CODE]: (r[S.NUMERIC_VALUE], r[S.TEXT_VALUE]) for r in omr.iter_rows(named=True)}
    assert values == {"Blood Pressure": (None, "110/65"), "Weight (Lbs)": (94.0, None)}


def test_dirty_rows_are_dropped_and_counted_by_reason(converted):
    fixture, summary, dest = converted
    assert dict(summary.rows_dropped) == fixture.dirty
    events = _events(dest)
    assert events.filter(pl.col(S.SUBJECT_ID) == 99999999).height == 0
    assert _at(events, S4, "MEDS_BIRTH") == [] and len(_at(events, S4, "LAB//50912//mg/dL")) == 1
    assert events.select(pl.struct(pl.all()).is_duplicated().any()).item() is False


def test_summary_matches_the_written_dataset(converted):
    fixture, summary, dest = converted
    events = _events(dest)
    assert summary.events_written == events.height
    assert summary.subjects == events[S.SUBJECT_ID].n_unique() == len(fixture.subjects)
    assert summary.codes == pq.ParquetFile(dest / S.CODES_FILE).metadata.num_rows
    assert summary.rows_read == sum(summary.tables.values())
    for table in ("hosp/patients", "hosp/labevents", "icu/chartevents", "hosp/d_labitems"):
        lines = (fixture.root / f"{table}.csv").read_text().count("\n") - 1
        lines -= table == "hosp/labevents"  # one lab comment holds a quoted newline
        assert summary.tables[table] == lines
    assert summary.seconds > 0


def test_output_shards_validate_against_the_meds_schema(converted):
    _, _, dest = converted
    shards = MEDSDataset.open(dest).shard_paths()
    assert shards
    for shard in shards:
        table = pq.read_table(shard)
        meds.DataSchema.validate(table)
        assert table.schema.equals(S.DATA_SCHEMA, check_metadata=False)


def test_codes_parquet_holds_descriptions_and_icd_and_loinc_parents(converted):
    _, _, dest = converted
    codes = {r["code"]: r for r in MEDSDataset.open(dest).codes().iter_rows(named=True)}
    assert codes["DIAGNOSIS//ICD//9//5723"]["description"] == "Portal hypertension"
    assert codes["DIAGNOSIS//ICD//9//5723"]["parent_codes"] == ["ICD9CM/572.3"]
    assert codes["DIAGNOSIS//ICD//9//E8859"]["parent_codes"] == ["ICD9CM/E885.9"]
    assert codes["DIAGNOSIS//ICD//9//V1046"]["parent_codes"] == ["ICD9CM/V10.46"]
    assert codes["DIAGNOSIS//ICD//10//E119"]["parent_codes"] == ["ICD10CM/E11.9"]
    assert codes["DIAGNOSIS//ICD//10//I10"]["description"] == "Essential (primary) hypertension"
    assert codes["PROCEDURE//ICD//9//5491"]["description"] == "Percutaneous abdominal drainage"
    assert codes["LAB//50912//mg/dL"]["description"].startswith("Creatinine")
    assert codes["LAB//50912//mg/dL"]["parent_codes"] == ["LOINC/2160-0"]
    # d_labitems has no loinc_code for 51266: the shipped itemid -> LOINC table fills it in
    assert codes["LAB//51266//UNK"]["parent_codes"] == ["LOINC/9317-9"]
    assert codes["LAB//220045//bpm"]["description"] == "Heart Rate"
    assert codes["GENDER//F"]["description"] == "Female"


@pytest.mark.parametrize(("code", "version", "dotted"), [
    ("25000", 9, "250.00"), ("E8859", 9, "E885.9"), ("V1046", 9, "V10.46"), ("401", 9, "401"),
    ("E119", 10, "E11.9"), ("I10", 10, "I10"), ("S72.001A", 10, "S72.001A"),
])
def test_dotted_icd_puts_the_dot_where_icd_cm_does(code, version, dotted):
    assert dotted_icd(code, version) == dotted


def test_3x_layout_without_loinc_codes_takes_lab_parents_from_the_shipped_table(tmp_path):
    fixture = write_mimic_iv_fixture(tmp_path / "src", version="3.1")
    assert "loinc_code" not in (fixture.root / "hosp" / "d_labitems.csv").read_text()
    summary = convert(fixture.root, tmp_path / "meds")
    codes = MEDSDataset.open(tmp_path / "meds").codes()
    lab = codes.filter(pl.col("code") == "LAB//50912//mg/dL").row(0, named=True)
    assert lab["description"].startswith("Creatinine")
    assert lab["parent_codes"] == ["LOINC/2160-0"]
    assert dict(summary.rows_dropped) == fixture.dirty
    dataset = (tmp_path / "meds" / S.DATASET_FILE).read_text()
    assert '"dataset_name": "MIMIC-IV"' in dataset


def test_gzipped_tables_give_the_same_events_as_plain_csv(tmp_path, converted):
    _, _, plain = converted
    fixture = write_mimic_iv_fixture(tmp_path / "src", gz=True)
    assert (fixture.root / "hosp" / "labevents.csv.gz").exists()
    convert(fixture.root, tmp_path / "meds", chunk_rows=3)
    order = [S.SUBJECT_ID, S.TIME, S.CODE]
    assert _events(tmp_path / "meds").sort(order).equals(_events(plain).sort(order))


def test_chunk_size_does_not_change_the_result(tmp_path, converted):
    _, _, small_chunks = converted
    fixture = write_mimic_iv_fixture(tmp_path / "src")
    convert(fixture.root, tmp_path / "meds", chunk_rows=100_000)
    order = [S.SUBJECT_ID, S.TIME, S.CODE]
    assert _events(tmp_path / "meds").sort(order).equals(_events(small_chunks).sort(order))


@pytest.mark.parametrize("table", ["hosp/patients", "hosp/admissions"])
def test_missing_required_table_names_the_path_and_the_fix(tmp_path, table):
    fixture = write_mimic_iv_fixture(tmp_path / "src", omit=[table])
    with pytest.raises(DataError) as err:
        convert(fixture.root, tmp_path / "meds")
    assert table in str(err.value) and "Fix:" in str(err.value)
    assert not (tmp_path / "meds").exists()


def test_missing_optional_tables_are_skipped_and_noted(tmp_path):
    omitted = ["icu/chartevents", "hosp/labevents", "hosp/d_labitems"]
    fixture = write_mimic_iv_fixture(tmp_path / "src", omit=omitted)
    summary = convert(fixture.root, tmp_path / "meds")
    assert set(omitted) <= set(summary.skipped_tables)
    assert not set(omitted) & set(summary.tables)
    events = _events(tmp_path / "meds")
    assert events.filter(pl.col(S.CODE).str.starts_with("LAB//")).height == 0
    assert events.filter(pl.col(S.CODE).str.starts_with("DIAGNOSIS//")).height > 0


def test_missing_required_column_names_the_file_the_column_and_the_fix(tmp_path):
    fixture = write_mimic_iv_fixture(tmp_path / "src", gz=True,
                                     drop_columns={"hosp/labevents": ["valueuom"]})
    with pytest.raises(DataError) as err:
        convert(fixture.root, tmp_path / "meds")
    message = str(err.value)
    assert "labevents.csv.gz" in message and "'valueuom'" in message and "Fix:" in message
    assert not (tmp_path / "meds").exists()


def test_header_only_tables_are_fine(tmp_path):
    empty = ["hosp/labevents", "icu/chartevents", "hosp/diagnoses_icd"]
    fixture = write_mimic_iv_fixture(tmp_path / "src", empty=empty)
    summary = convert(fixture.root, tmp_path / "meds")
    assert all(summary.tables[t] == 0 for t in empty)
    assert summary.events_written == _events(tmp_path / "meds").height > 0


def test_failed_import_leaves_no_dest_and_no_staging(tmp_path):
    fixture = write_mimic_iv_fixture(tmp_path / "src", gz=True)
    labs = fixture.root / "hosp" / "labevents.csv.gz"
    labs.write_bytes(labs.read_bytes()[:-20])  # a truncated download
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DataError) as err:
        convert(fixture.root, out / "meds", chunk_rows=2)
    assert "labevents.csv.gz" in str(err.value)
    assert list(out.iterdir()) == []


def test_failed_import_with_overwrite_keeps_the_old_dataset(tmp_path):
    fixture = write_mimic_iv_fixture(tmp_path / "src", gz=True)
    dest = tmp_path / "meds"
    convert(fixture.root, dest)
    before = _events(dest)
    labs = fixture.root / "hosp" / "labevents.csv.gz"
    labs.write_bytes(labs.read_bytes()[:-20])  # fails after earlier tables were converted
    with pytest.raises(DataError):
        convert(fixture.root, dest, overwrite=True, chunk_rows=2)
    assert _events(dest).equals(before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meds", "src"]


def test_existing_dest_is_refused_without_overwrite(tmp_path):
    fixture = write_mimic_iv_fixture(tmp_path / "src")
    (tmp_path / "meds").mkdir()
    with pytest.raises(DataError, match="already exists"):
        convert(fixture.root, tmp_path / "meds")


def test_missing_source_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="hosp/ and icu/"):
        convert(tmp_path / "nowhere", tmp_path / "meds")


def test_progress_has_one_task_per_table_advanced_by_rows(tmp_path):
    fixture = write_mimic_iv_fixture(tmp_path / "src")
    with Progress(disable=True) as progress:
        summary = convert(fixture.root, tmp_path / "meds", chunk_rows=2, progress=progress)
    tasks = {t.description: t for t in progress.tasks}
    assert set(tasks) == set(summary.tables)
    labs = tasks["hosp/labevents"]
    malformed = summary.rows_dropped["hosp/labevents: malformed CSV row (wrong number of fields)"]
    assert labs.completed == labs.total == summary.tables["hosp/labevents"]  # malformed included
    assert malformed == 1
