"""The Synthea CSV ETL: vocabularies, values, ids, dirty input, errors and atomicity."""

from __future__ import annotations

import csv
import math
import shutil
from collections import Counter
from datetime import UTC, datetime

import meds
import polars as pl
import pyarrow.parquet as pq
import pytest
from rich.progress import Progress

from fedehr.shared.data import schema as S
from fedehr.shared.data.dataset import MEDSDataset
from fedehr.shared.data.etl import synthea
from fedehr.shared.errors import DataError
from tests.fixtures import synthea_fixture as sf


def _events(dest) -> pl.DataFrame:
    return MEDSDataset.open(dest).scan().collect()


def _codes(dest) -> dict[str, tuple[str | None, list[str] | None]]:
    table = MEDSDataset.open(dest).codes()
    return {r["code"]: (r["description"], r["parent_codes"]) for r in table.iter_rows(named=True)}


def _naive(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(tzinfo=None)


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthea")
    fx = sf.write_synthea_fixture(root / "src", n_patients=4, visits=4)
    summary = synthea.convert(fx.root, root / "meds", chunk_rows=7)
    return fx, root / "meds", summary


def test_codes_keep_the_source_vocabularies_and_descriptions(imported):
    fx, dest, _ = imported
    codes = _codes(dest)
    present = set(_events(dest)[S.CODE].unique())
    for code, desc in sf.CONDITIONS:
        assert codes[f"SNOMEDCT/{code}"][0] == desc
    for code, desc in sf.MEDICATIONS:
        assert codes[f"RxNorm/{code}"][0] == desc
    for code, desc in sf.PROCEDURES:
        assert codes[f"SNOMEDCT/{code}"][0] == desc
    assert codes[f"CVX/{sf.IMMUNIZATION[0]}"][0] == sf.IMMUNIZATION[1]
    for code, system, _, _ in sf.ALLERGIES:
        prefix = "SNOMEDCT" if system == "SNOMED-CT" else system
        assert f"ALLERGY//{prefix}/{code}" in present
        assert codes[f"ALLERGY//{prefix}/{code}"][1] == [f"{prefix}/{code}"]
    assert {f"ENCOUNTER//{c}" for c in fx.encounters} <= present
    assert present <= set(codes), "every event code is listed in codes.parquet"


def test_numeric_observations_carry_value_and_unit_in_the_code(imported):
    fx, dest, _ = imported
    events = _events(dest)
    codes = _codes(dest)
    subject = {p: synthea.subject_id_for(p) for p in fx.patients}
    numeric = [o for o in fx.observations if o.type == "numeric" and o.value != "12,5"]
    assert numeric
    for obs in numeric:
        code = f"LOINC/{obs.code}//{obs.unit}"
        rows = events.filter((pl.col(S.SUBJECT_ID) == subject[obs.patient])
                             & (pl.col(S.TIME) == _naive(obs.when)) & (pl.col(S.CODE) == code))
        assert rows.height == 1
        assert math.isclose(rows[S.NUMERIC_VALUE][0], float(obs.value), rel_tol=1e-6)
        assert rows[S.TEXT_VALUE][0] is None
        assert codes[code][1] == [f"LOINC/{obs.code}"]
        assert f"LOINC/{obs.code}" in codes, "the unit-free parent code is described too"


def test_text_observations_go_to_text_value(imported):
    fx, dest, _ = imported
    events = _events(dest)
    texts = [o for o in fx.observations if o.type == "text"]
    rows = events.filter(pl.col(S.CODE) == f"LOINC/{texts[0].code}")
    assert rows.height == len(texts)
    assert rows[S.NUMERIC_VALUE].null_count() == rows.height
    assert sorted(rows[S.TEXT_VALUE].to_list()) == sorted(o.value for o in texts)


def test_unparsable_numeric_value_keeps_the_row_with_the_raw_text(imported):
    fx, dest, _ = imported
    bad = next(o for o in fx.observations if o.value == "12,5")
    rows = _events(dest).filter((pl.col(S.TIME) == _naive(bad.when))
                                & (pl.col(S.TEXT_VALUE) == bad.value))
    assert rows.height == 1
    assert rows[S.CODE][0] == f"LOINC/{bad.code}//{bad.unit}"
    assert rows[S.NUMERIC_VALUE][0] is None


def test_subject_ids_are_a_deterministic_hash_of_the_patient_uuid(imported, tmp_path):
    fx, dest, _ = imported
    ids = set(_events(dest)[S.SUBJECT_ID].unique())
    assert ids == {synthea.subject_id_for(p) for p in fx.patients}
    assert all(0 < i < 2**63 for i in ids)
    uuid = fx.patients[0]
    assert synthea.subject_id_for(f" {uuid.upper()} ") == synthea.subject_id_for(uuid)
    synthea.convert(fx.root, tmp_path / "again", chunk_rows=7)
    assert _events(tmp_path / "again").equals(_events(dest))


def test_reading_in_small_chunks_gives_the_same_dataset_as_one_chunk(imported, tmp_path):
    fx, dest, _ = imported
    synthea.convert(fx.root, tmp_path / "one", chunk_rows=1_000_000)
    assert _events(tmp_path / "one").equals(_events(dest))
    assert _codes(tmp_path / "one") == _codes(dest)


def test_gzipped_export_gives_the_same_dataset(tmp_path):
    plain = sf.write_synthea_fixture(tmp_path / "plain")
    gz = sf.write_synthea_fixture(tmp_path / "gz", gz=True)
    assert all(p.name.endswith(".csv.gz") for p in gz.files.values())
    synthea.convert(plain.root, tmp_path / "a")
    synthea.convert(gz.root, tmp_path / "b")
    assert _events(tmp_path / "b").height > 0
    assert _events(tmp_path / "b").equals(_events(tmp_path / "a"))


def test_dirty_rows_are_dropped_and_counted_by_table_and_reason(imported):
    fx, _, summary = imported
    reason = {sf.MISSING_TIME: synthea.MISSING_TIME, sf.UNKNOWN_PATIENT: synthea.UNKNOWN_PATIENT,
              sf.MISSING_ID: synthea.MISSING_ID, sf.MALFORMED: synthea.MALFORMED_ROW}
    expected = Counter()
    for (table, kind), n in fx.dirty.items():
        if kind == sf.DUPLICATE:
            expected[synthea.DUPLICATE_EVENT] += n
        elif kind in reason:
            expected[f"{table}: {reason[kind]}"] += n
    assert summary.rows_dropped == expected
    assert summary.rows_read == sum(fx.rows.values())
    assert summary.tables == dict(fx.rows)


def test_summary_counts_match_the_written_dataset(imported):
    fx, dest, summary = imported
    events = _events(dest)
    assert summary.events_written == events.height
    assert summary.subjects == len(fx.patients) == events[S.SUBJECT_ID].n_unique()
    assert summary.codes == len(_codes(dest))
    assert events.unique().height == events.height, "no duplicate events"


def test_dates_and_zulu_timestamps_become_naive_utc(imported):
    fx, dest, _ = imported
    events = _events(dest)
    assert events.schema[S.TIME] == pl.Datetime("us", None)
    births = events.filter(pl.col(S.CODE) == S.BIRTH_CODE)
    assert births.height == len(fx.patients)
    assert all(t.hour == 0 and t.minute == 0 for t in births[S.TIME])
    deaths = events.filter(pl.col(S.CODE) == S.DEATH_CODE)
    assert set(deaths[S.SUBJECT_ID]) == {synthea.subject_id_for(p) for p in fx.dead}
    obs_times = {_naive(o.when) for o in fx.observations}
    got = set(events.filter(pl.col(S.CODE).str.starts_with("LOINC/"))[S.TIME])
    assert got == obs_times


def test_inpatient_encounters_get_admission_and_discharge_events(imported):
    fx, dest, _ = imported
    codes = _events(dest)[S.CODE].value_counts()
    count = dict(zip(codes[S.CODE], codes["count"], strict=True))
    assert fx.encounters["inpatient"] > 0
    assert count["HOSPITAL_ADMISSION//inpatient"] == fx.encounters["inpatient"]
    assert count["HOSPITAL_DISCHARGE//inpatient"] == fx.encounters["inpatient"]
    assert not any(c.startswith("HOSPITAL_ADMISSION//") and c != "HOSPITAL_ADMISSION//inpatient"
                   for c in count)
    for cls, n in fx.encounters.items():
        assert count[f"ENCOUNTER//{cls}"] == n
        assert count[f"ENCOUNTER_END//{cls}"] == n


def test_imaging_studies_are_one_event_per_study_with_the_study_id(imported):
    fx, dest, _ = imported
    rows = _events(dest).filter(pl.col(S.CODE).str.starts_with("IMAGING//"))
    study_ids = set(pl.read_csv(fx.files["imaging_studies"], infer_schema=False)["Id"])
    assert rows.height == len(study_ids) > 0
    assert set(rows[S.TEXT_VALUE]) == study_ids


def test_output_passes_the_meds_schema(imported):
    _, dest, _ = imported
    for shard in MEDSDataset.open(dest).shard_paths():
        table = pq.read_table(shard)
        assert table.schema.equals(S.DATA_SCHEMA, check_metadata=False)
        meds.DataSchema.validate(table)
    meds.CodeMetadataSchema.validate(pq.read_table(dest / S.CODES_FILE))
    meds.SubjectSplitSchema.validate(pq.read_table(dest / S.SPLITS_FILE))


def test_export_without_system_column_defaults_to_snomedct(tmp_path):
    fx = sf.write_synthea_fixture(tmp_path / "src", dirty=False,
                                  drop_columns={"conditions": ["SYSTEM"], "procedures": ["SYSTEM"]})
    synthea.convert(fx.root, tmp_path / "meds")
    present = set(_events(tmp_path / "meds")[S.CODE])
    assert {f"SNOMEDCT/{c}" for c, _ in sf.CONDITIONS} <= present


def test_empty_optional_tables_are_imported_as_no_events(tmp_path):
    fx = sf.write_synthea_fixture(tmp_path / "src", dirty=False, tables=("patients", "conditions"),
                                  n_patients=2)
    header = fx.files["conditions"].read_text().splitlines()[0]
    fx.files["conditions"].write_text(header + "\n")
    (fx.root / "observations.csv").write_text("")
    summary = synthea.convert(fx.root, tmp_path / "meds")
    assert summary.tables["conditions"] == 0
    assert summary.subjects == 2
    assert set(_events(tmp_path / "meds")[S.CODE]) >= {S.BIRTH_CODE}


def test_missing_patients_table_is_a_data_error_naming_the_path_and_fix(tmp_path):
    fx = sf.write_synthea_fixture(tmp_path / "src", tables=("encounters",))
    with pytest.raises(DataError) as err:
        synthea.convert(fx.root, tmp_path / "meds")
    assert "patients.csv" in str(err.value)
    assert err.value.fix
    assert not (tmp_path / "meds").exists()


def test_missing_required_column_is_a_data_error_naming_file_and_column(tmp_path):
    fx = sf.write_synthea_fixture(tmp_path / "src", drop_columns={"observations": ["VALUE"]})
    with pytest.raises(DataError) as err:
        synthea.convert(fx.root, tmp_path / "meds")
    assert err.value.where == str(fx.files["observations"])
    assert "VALUE" in err.value.message
    assert err.value.fix
    assert not (tmp_path / "meds").exists()


def test_failed_import_leaves_the_destination_untouched(tmp_path, monkeypatch):
    fx = sf.write_synthea_fixture(tmp_path / "src")
    dest = tmp_path / "meds"
    synthea.convert(fx.root, dest)  # the old dataset
    before = sorted(p.name for p in dest.iterdir())

    def boom(frame, run):
        raise RuntimeError("disk full")

    time_col, needed, _ = synthea._CONVERTERS["observations"]
    monkeypatch.setitem(synthea._CONVERTERS, "observations", (time_col, needed, boom))
    with pytest.raises(RuntimeError):
        synthea.convert(fx.root, dest, overwrite=True)
    assert sorted(p.name for p in dest.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meds", "src"], "no staging left"


def test_export_with_no_patient_ids_fails_without_creating_the_destination(tmp_path):
    fx = sf.write_synthea_fixture(tmp_path / "src", n_patients=0)
    with pytest.raises(DataError) as err:
        synthea.convert(fx.root, tmp_path / "meds")
    assert err.value.where == str(fx.files["patients"])
    assert not (tmp_path / "meds").exists()


def test_existing_destination_needs_overwrite(imported, tmp_path):
    fx, dest, _ = imported
    copy = tmp_path / "meds"
    shutil.copytree(dest, copy)
    with pytest.raises(DataError, match="overwrite"):
        synthea.convert(fx.root, copy)
    summary = synthea.convert(fx.root, copy, overwrite=True)
    assert summary.events_written == _events(copy).height


def test_progress_gets_one_task_per_table_advanced_by_rows(tmp_path):
    fx = sf.write_synthea_fixture(tmp_path / "src")
    progress = Progress(disable=True)
    synthea.convert(fx.root, tmp_path / "meds", progress=progress, chunk_rows=5)
    done = {t.description.removeprefix("synthea "): t.completed for t in progress.tasks}
    assert done == {table: float(n) for table, n in fx.rows.items()}


def test_offsets_fractions_naive_and_date_only_times_all_parse_to_utc(tmp_path):
    fx = sf.write_synthea_fixture(tmp_path / "src", n_patients=1, visits=5, dirty=False,
                                  tables=("patients", "encounters"))
    path = fx.files["encounters"]
    spellings = ["2020-03-01T12:00:00Z", "2020-03-01T14:00:00+02:00", "2020-03-01T12:00:00.000Z",
                 "2020-03-01T12:00:00", "2020-03-01"]
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row, start in zip(rows, spellings, strict=True):
        row["START"], row["STOP"] = start, ""
    with path.open("w", newline="") as fh:
        out = csv.DictWriter(fh, fieldnames=list(rows[0]))
        out.writeheader()
        out.writerows(rows)
    summary = synthea.convert(fx.root, tmp_path / "meds")
    starts = _events(tmp_path / "meds").filter(pl.col(S.CODE).str.starts_with("ENCOUNTER//"))
    assert not summary.rows_dropped
    assert set(starts[S.TIME]) == {datetime(2020, 3, 1, 12), datetime(2020, 3, 1)}


def test_byte_order_mark_and_windows_line_endings_are_read(tmp_path):
    fx = sf.write_synthea_fixture(tmp_path / "src", n_patients=2, dirty=False,
                                  tables=("patients", "conditions"))
    for path in fx.files.values():
        text = path.read_text()
        path.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    summary = synthea.convert(fx.root, tmp_path / "meds")
    assert summary.subjects == 2
    assert not summary.rows_dropped
    codes = set(_events(tmp_path / "meds")[S.CODE])
    assert {f"SNOMEDCT/{c}" for c, _ in sf.CONDITIONS} <= codes


def test_truncated_gzip_file_is_a_data_error_and_leaves_no_destination(tmp_path):
    fx = sf.write_synthea_fixture(tmp_path / "src", n_patients=40, gz=True)
    path = fx.files["observations"]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as err:
        synthea.convert(fx.root, tmp_path / "meds")
    assert err.value.where == str(path)
    assert not (tmp_path / "meds").exists()
