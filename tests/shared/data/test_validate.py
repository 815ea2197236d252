"""validate(root): every problem of a MEDS dataset, each naming its file and its fix."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedehr.shared.data import schema as S
from fedehr.shared.data.validate import Problem, errors, validate
from fedehr.shared.data.writer import MEDSWriter

T0 = datetime(2020, 1, 1)


def _events(n_subjects: int = 20, per_subject: int = 5) -> pl.DataFrame:
    rows = []
    for sid in range(1, n_subjects + 1):
        rows.append({S.SUBJECT_ID: sid, S.TIME: None, S.CODE: "GENDER//F",
                     S.NUMERIC_VALUE: None, S.TEXT_VALUE: None})
        for k in range(per_subject):
            rows.append({S.SUBJECT_ID: sid, S.TIME: T0 + timedelta(days=sid, hours=k),
                         S.CODE: f"LAB//{k}//mg/dL", S.NUMERIC_VALUE: float(k),
                         S.TEXT_VALUE: "high" if k == 0 else None})
    return pl.DataFrame(rows, schema={S.SUBJECT_ID: pl.Int64, S.TIME: pl.Datetime("us"),
                                      S.CODE: pl.String, S.NUMERIC_VALUE: pl.Float32,
                                      S.TEXT_VALUE: pl.String})


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "meds"
    with MEDSWriter(root, dataset_name="test", etl_name="test") as writer:
        writer.add_events(_events())
        writer.add_codes(["GENDER//F"], ["female"])
    return root


def _shard(root: Path, split: str = "train") -> Path:
    return root / S.DATA_DIR / split / "0.parquet"


def _rewrite(path: Path, edit) -> None:
    """Read a parquet file as polars, apply `edit`, write it back.

    `edit` returns a polars frame (string columns keep the file's string type, which
    polars would turn into large_string) or a pyarrow table (written as is).
    """
    table = edit(pl.read_parquet(path))
    if isinstance(table, pl.DataFrame):
        old = pq.read_schema(path)
        table = table.to_arrow()
        fields = [
            f.with_type(pa.string())
            if f.name in old.names and old.field(f.name).type == pa.string()
            and f.type == pa.large_string() else f
            for f in table.schema
        ]
        table = table.cast(pa.schema(fields))
    pq.write_table(table, path)


def _only(problems: list[Problem], text: str) -> Problem:
    hits = [p for p in problems if text in p.message]
    assert len(hits) == 1, f"expected one problem mentioning {text!r}, got {problems}"
    return hits[0]


def _names_file_and_fix(problem: Problem, path: Path) -> None:
    assert problem.file == str(path)
    assert problem.fix
    assert str(path) in str(problem) and "Fix:" in str(problem)


# -- clean datasets ---------------------------------------------------------------------

def test_dataset_written_by_medswriter_has_no_problems(dataset: Path) -> None:
    problems = validate(dataset)
    # The writer lists every code in codes.parquet, so not even warnings.
    assert problems == []


def test_meds_03_dataset_with_extra_columns_and_string_text_value_is_accepted(
    dataset: Path,
) -> None:
    shard = _shard(dataset)
    _rewrite(shard, lambda df: df.with_columns(hadm_id=pl.int_range(pl.len())))
    _rewrite(shard, lambda df: pq.read_table(shard).set_column(
        4, S.TEXT_VALUE, pq.read_table(shard).column(S.TEXT_VALUE).cast(pa.string())))
    meta = dataset / S.DATASET_FILE
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "meds_version": "0.3.3"}))
    assert pq.read_schema(shard).field(S.TEXT_VALUE).type == pa.string()
    assert validate(dataset) == []


def test_problem_prints_as_one_line_with_severity_file_location_and_fix() -> None:
    p = Problem("data/train/0.parquet", "row 3", "bad", "do this")
    assert str(p) == "error: data/train/0.parquet (row 3): bad. Fix: do this"
    assert p.to_dict()["severity"] == "error"


# -- layout -----------------------------------------------------------------------------

def test_missing_root_folder_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    problems = validate(missing)
    _names_file_and_fix(_only(problems, "no such folder"), missing)


def test_missing_data_folder_is_an_error(dataset: Path) -> None:
    import shutil

    shutil.rmtree(dataset / S.DATA_DIR)
    p = _only(validate(dataset), "missing the 'data/' folder")
    _names_file_and_fix(p, dataset / S.DATA_DIR)
    assert p.severity == "error"


def test_data_folder_without_shards_is_an_error(dataset: Path) -> None:
    for shard in (dataset / S.DATA_DIR).rglob("*.parquet"):
        shard.unlink()
    p = _only(validate(dataset), "no parquet shards")
    _names_file_and_fix(p, dataset / S.DATA_DIR)


def test_unreadable_parquet_shard_is_an_error_and_other_shards_are_still_checked(
    dataset: Path,
) -> None:
    bad = _shard(dataset)
    bad.write_bytes(b"this is not parquet")
    _rewrite(_shard(dataset, "tuning"), lambda df: df.with_columns(
        pl.when(pl.int_range(pl.len()) == 1).then(None).otherwise(pl.col(S.CODE)).alias(S.CODE)))
    problems = validate(dataset)
    _names_file_and_fix(_only(problems, "not a readable parquet file"), bad)
    _only(problems, "null code")  # the tuning shard was checked too


# -- core columns -------------------------------------------------------------------------

def test_missing_core_column_names_the_column(dataset: Path) -> None:
    shard = _shard(dataset)
    _rewrite(shard, lambda df: df.drop(S.CODE))
    p = _only(validate(dataset), "missing required column 'code'")
    _names_file_and_fix(p, shard)
    assert p.location == "column code"


def test_mistyped_core_columns_are_each_reported(dataset: Path) -> None:
    shard = _shard(dataset)
    _rewrite(shard, lambda df: df.with_columns(
        pl.col(S.SUBJECT_ID).cast(pl.String), pl.col(S.NUMERIC_VALUE).cast(pl.Float64),
        pl.col(S.TIME).cast(pl.Datetime("ns"))))
    problems = [p for p in validate(dataset) if p.file == str(shard)]
    by_col = {p.location: p for p in problems if p.severity == "error"}
    assert set(by_col) == {"column subject_id", "column numeric_value", "column time"}
    assert "want int64" in by_col["column subject_id"].message
    assert "float" in by_col["column numeric_value"].fix
    for p in by_col.values():
        _names_file_and_fix(p, shard)


def test_code_stored_as_large_string_is_only_a_warning(dataset: Path) -> None:
    shard = _shard(dataset)
    table = pq.read_table(shard)
    _rewrite(shard, lambda df: table.set_column(
        table.schema.get_field_index(S.CODE), S.CODE,
        table.column(S.CODE).cast(pa.large_string())))
    p = _only(validate(dataset), "'code' is large_string")
    assert p.severity == "warning"
    _names_file_and_fix(p, shard)


@pytest.mark.parametrize("column", [S.SUBJECT_ID, S.CODE])
def test_null_subject_id_or_code_reports_count_and_first_row(dataset: Path, column: str) -> None:
    shard = _shard(dataset)
    _rewrite(shard, lambda df: df.with_columns(
        pl.when(pl.int_range(pl.len()).is_in([4, 7])).then(None).otherwise(pl.col(column))
        .alias(column)))
    p = _only(validate(dataset), f"null {column}")
    _names_file_and_fix(p, shard)
    assert p.message.startswith("2 row(s)")
    assert p.location == f"row 4, column {column}"


def test_nan_and_inf_numeric_values_are_reported(dataset: Path) -> None:
    shard = _shard(dataset)
    _rewrite(shard, lambda df: df.with_columns(
        pl.when(pl.int_range(pl.len()) == 2).then(float("nan"))
        .when(pl.int_range(pl.len()).is_in([3, 5])).then(float("inf"))
        .otherwise(pl.col(S.NUMERIC_VALUE)).cast(pl.Float32).alias(S.NUMERIC_VALUE)))
    problems = validate(dataset)
    nan, inf = _only(problems, "NaN"), _only(problems, "infinite")
    assert nan.location == "row 2, column numeric_value"
    assert inf.message.startswith("2 infinite")
    for p in (nan, inf):
        _names_file_and_fix(p, shard)


# -- order ------------------------------------------------------------------------------------

def test_rows_out_of_time_order_within_a_subject_are_an_error(dataset: Path) -> None:
    shard = _shard(dataset)
    # Swap two timed rows of the first subject (rows 2 and 3).
    _rewrite(shard, lambda df: df[[0, 1, 3, 2, *range(4, df.height)]])
    p = _only(validate(dataset), "not sorted by (subject_id, time)")
    _names_file_and_fix(p, shard)
    assert p.location == "row 3, column time"


def test_subject_rows_split_into_two_runs_are_an_error(dataset: Path) -> None:
    shard = _shard(dataset)
    first_subject = pl.read_parquet(shard)[S.SUBJECT_ID][0]
    # Move the last row of the first subject to the end of the shard.
    _rewrite(shard, lambda df: pl.concat([
        df.filter(pl.col(S.SUBJECT_ID) == first_subject).head(-1),
        df.filter(pl.col(S.SUBJECT_ID) != first_subject),
        df.filter(pl.col(S.SUBJECT_ID) == first_subject).tail(1)]))
    p = _only(validate(dataset), "resume after another subject")
    _names_file_and_fix(p, shard)
    assert f"first subject {first_subject}" in p.message


def test_order_is_checked_across_record_batch_borders(dataset: Path, monkeypatch) -> None:
    from fedehr.shared.data import validate as module

    monkeypatch.setattr(module, "BATCH_ROWS", 3)
    shard = _shard(dataset)
    _rewrite(shard, lambda df: df[[0, 1, 3, 2, *range(4, df.height)]])
    p = _only(validate(dataset), "not sorted by (subject_id, time)")
    assert p.location == "row 3, column time"
    assert not [q for q in validate(dataset) if "resume" in q.message]


def test_static_row_after_timed_rows_is_an_error(dataset: Path) -> None:
    shard = _shard(dataset)
    # Row 0 is the first subject's static row; put it after that subject's timed rows.
    _rewrite(shard, lambda df: df[[1, 2, 3, 4, 5, 0, *range(6, df.height)]])
    p = _only(validate(dataset), "static row(s) (null time) after timed rows")
    _names_file_and_fix(p, shard)
    assert p.location == "row 5, column time"


def test_subjects_in_descending_id_order_are_only_a_warning(dataset: Path) -> None:
    shard = _shard(dataset)
    _rewrite(shard, lambda df: df.sort([pl.col(S.SUBJECT_ID), pl.col(S.TIME)],
                                       descending=[True, False], nulls_last=False))
    problems = validate(dataset)
    p = _only(problems, "not in ascending subject_id order")
    assert p.severity == "warning"
    assert errors(problems) == []


def test_subject_in_two_shards_is_an_error(dataset: Path) -> None:
    train, tuning = _shard(dataset), _shard(dataset, "tuning")
    moved = pl.read_parquet(train).head(3)  # rows of one subject
    _rewrite(tuning, lambda df: pl.concat([moved, df]).sort(S.SUBJECT_ID, S.TIME,
                                                            nulls_last=False))
    problems = validate(dataset)
    p = _only(problems, "also in")
    assert p.file in (str(train), str(tuning))
    assert str(train) in p.message or str(tuning) in p.message
    assert p.fix


# -- metadata ------------------------------------------------------------------------------

def test_missing_codes_parquet_is_a_warning(dataset: Path) -> None:
    (dataset / S.CODES_FILE).unlink()
    p = _only(validate(dataset), "codes have no descriptions")
    assert p.severity == "warning"
    _names_file_and_fix(p, dataset / S.CODES_FILE)


def test_mistyped_codes_parquet_is_an_error(dataset: Path) -> None:
    path = dataset / S.CODES_FILE
    pq.write_table(pa.table({"code": [1, 2], "description": ["a", "b"]}), path)
    p = _only(validate(dataset), "'code' is int64")
    assert p.severity == "error"
    _names_file_and_fix(p, path)


def test_codes_missing_from_codes_parquet_are_a_warning(dataset: Path) -> None:
    path = dataset / S.CODES_FILE
    _rewrite(path, lambda df: df.filter(pl.col("code") != "LAB//0//mg/dL"))
    p = _only(validate(dataset), "have no entry")
    assert p.severity == "warning"
    assert "'LAB//0//mg/dL'" in p.message
    _names_file_and_fix(p, path)


def test_subject_split_contradicting_its_shard_folder_is_an_error(dataset: Path) -> None:
    path = dataset / S.SPLITS_FILE
    moved = pl.read_parquet(_shard(dataset, "tuning"))[S.SUBJECT_ID][0]
    _rewrite(path, lambda df: df.with_columns(
        pl.when(pl.col(S.SUBJECT_ID) == moved).then(pl.lit("train")).otherwise(pl.col("split"))
        .alias("split")))
    p = _only(validate(dataset), "in the 'tuning' folder are listed as train")
    _names_file_and_fix(p, _shard(dataset, "tuning"))


def test_subject_missing_from_subject_splits_is_an_error(dataset: Path) -> None:
    path = dataset / S.SPLITS_FILE
    gone = pl.read_parquet(_shard(dataset))[S.SUBJECT_ID][0]
    _rewrite(path, lambda df: df.filter(pl.col(S.SUBJECT_ID) != gone))
    p = _only(validate(dataset), "missing from metadata/subject_splits.parquet")
    _names_file_and_fix(p, _shard(dataset))
    assert str(gone) in p.message


def test_split_without_events_is_a_warning(dataset: Path) -> None:
    path = dataset / S.SPLITS_FILE
    _rewrite(path, lambda df: pl.concat([df, pl.DataFrame(
        {S.SUBJECT_ID: [999], "split": ["train"]}, schema=df.schema)]))
    p = _only(validate(dataset), "have a split but no events")
    assert p.severity == "warning"
    _names_file_and_fix(p, path)


def test_unparsable_dataset_json_is_an_error(dataset: Path) -> None:
    path = dataset / S.DATASET_FILE
    path.write_text('{"dataset_name": "x",')
    p = _only(validate(dataset), "not valid JSON")
    _names_file_and_fix(p, path)


def test_unsupported_meds_version_is_an_error(dataset: Path) -> None:
    path = dataset / S.DATASET_FILE
    path.write_text(json.dumps({"dataset_name": "x", "meds_version": "0.2.0"}))
    p = _only(validate(dataset), "meds_version '0.2.0' is not supported")
    _names_file_and_fix(p, path)
    assert p.location == "key meds_version"


def test_dataset_json_violating_the_meds_schema_is_an_error(dataset: Path) -> None:
    path = dataset / S.DATASET_FILE
    path.write_text(json.dumps({"dataset_name": 3, "meds_version": "0.4.1"}))
    p = _only(validate(dataset), "is not of type 'string'")
    assert p.location == "key dataset_name"
    _names_file_and_fix(p, path)


def test_all_problems_are_reported_not_just_the_first(dataset: Path) -> None:
    (dataset / S.DATASET_FILE).write_text("not json")
    (dataset / S.CODES_FILE).unlink()
    _rewrite(_shard(dataset), lambda df: df.with_columns(
        pl.lit(float("nan"), pl.Float32).alias(S.NUMERIC_VALUE)))
    _rewrite(_shard(dataset, "tuning"), lambda df: df.drop(S.TIME))
    problems = validate(dataset)
    messages = " | ".join(p.message for p in problems)
    for text in ("not valid JSON", "codes have no descriptions", "NaN",
                 "missing required column 'time'"):
        assert text in messages
