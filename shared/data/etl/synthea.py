"""Synthea CSV export -> MEDS.

Synthea (https://github.com/synthetichealth/synthea) writes one CSV per table
into `output/csv/` when `exporter.csv.export = true`. This module reads the
Synthea v3 layout (v2 files with `procedures.DATE` instead of `START` work too),
plain or gzipped, in bounded-size chunks, and hands MEDS events to `MEDSWriter`,
which writes the dataset atomically. Conventions (the full list with what is
dropped is in docs/etl-synthea.md):

- subject_id: Synthea's patient `Id` is a UUID string. It is mapped to
  ``int.from_bytes(sha256(uuid.strip().lower())[:8], "big") & (2**63 - 1)``,
  a positive int64 that is the same on every run and every machine, so a
  patient keeps its subject_id across re-imports. Two UUIDs that collide
  (odds ~n^2 / 2^64) stop the import.
- patients: ``GENDER//<F|M>`` (static, null time), ``MEDS_BIRTH`` at BIRTHDATE,
  ``MEDS_DEATH`` at DEATHDATE.
- conditions ``<SYSTEM>/<code>`` (SNOMEDCT when the SYSTEM column is absent),
  procedures likewise, medications ``RxNorm/<code>`` at START and
  ``MEDICATION_END//RxNorm/<code>`` at STOP, immunizations ``CVX/<code>``,
  allergies ``ALLERGY//<SYSTEM>/<code>``.
- observations: numeric ones ``LOINC/<code>//<unit>`` (plain ``LOINC/<code>``
  when the unit is empty) with `numeric_value`; codes.parquet lists
  ``LOINC/<code>`` as the parent code so the standard code stays one lookup
  away. Text ones ``LOINC/<code>`` with `text_value`. A numeric value that
  does not parse keeps the row with `numeric_value` null and the raw value in
  `text_value`.
- encounters: ``ENCOUNTER//<class>`` at START, ``ENCOUNTER_END//<class>`` at
  STOP; classes in `ADMISSION_CLASSES` also get ``HOSPITAL_ADMISSION//<class>``
  and ``HOSPITAL_DISCHARGE//<class>``.
- imaging studies: ``IMAGING//<MODALITY_CODE>//<BODYSITE_CODE>`` with the study
  Id in `text_value` (one event per study: instance rows collapse).
- Times: ISO 8601 with ``Z`` or an offset, naive ISO date-times and plain
  dates are all read; output is naive UTC ``timestamp[us]``.

Dirty input is counted in `ImportSummary.rows_dropped` under
``"<table>: <reason>"`` with the reasons below, never silently lost.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from rich.progress import Progress

from fedehr.shared.data import schema as S
from fedehr.shared.data.etl.source import (
    MALFORMED_ROW,  # noqa: F401  (re-exported: one of this ETL's drop reasons)
    SourceTable,
    TableReader,
    TableSpec,
    find_table,
    finish_summary,
    resolve,
    stable_subject_id,
)
from fedehr.shared.data.etl.summary import DUPLICATE_EVENTS, ImportSummary
from fedehr.shared.data.writer import MEDSWriter
from fedehr.shared.errors import DataError

log = logging.getLogger(__name__)

ETL_NAME = "fedehr.synthea"

# Drop reasons, as they appear after "<table>: " in ImportSummary.rows_dropped.
MISSING_TIME = "missing or unparsable time"
UNKNOWN_PATIENT = "unknown patient"
MISSING_CODE = "missing code"
MISSING_ID = "missing patient Id"
MISSING_BIRTH = "missing or unparsable birth date (no MEDS_BIRTH)"
BAD_END_TIME = "unparsable end time (no end event)"
BAD_DEATH = "unparsable death date (no MEDS_DEATH)"
DUPLICATE_EVENT = DUPLICATE_EVENTS  # counted for the whole import, without a table

# Encounter classes that are hospital admissions (Synthea's ENCOUNTERCLASS values).
ADMISSION_CLASSES = ("inpatient",)

# Spellings of the SYSTEM column mapped to the vocabulary prefix used in codes.
# Anything else is upper-cased with non-alphanumerics removed ("ICD-10" -> "ICD10").
_SYSTEM_PREFIX = {
    "SNOMED-CT": "SNOMEDCT",
    "SNOMED CT": "SNOMEDCT",
    "SNOMED": "SNOMEDCT",
    "SNOMEDCT": "SNOMEDCT",
    "HTTP://SNOMED.INFO/SCT": "SNOMEDCT",
    "RXNORM": "RxNorm",
    "HTTP://WWW.NLM.NIH.GOV/RESEARCH/UMLS/RXNORM": "RxNorm",
    "LOINC": "LOINC",
    "HTTP://LOINC.ORG": "LOINC",
    "CVX": "CVX",
}

_FIX_COLUMNS = ("export with Synthea's CSV exporter (v3 layout) or add the column "
                "to the file header")

# Internal columns of an event frame before it is narrowed to the MEDS core columns.
_DESC = "_description"
_PARENT = "_parent"
_PARENT_DESC = "_parent_description"
_KEY = "_patient_key"


def subject_id_for(patient_uuid: str) -> int:
    """The MEDS subject_id of a Synthea patient UUID (see the module docstring)."""
    return stable_subject_id(patient_uuid)


# -- table layouts ------------------------------------------------------------------


_Table = TableSpec
_Source = SourceTable

_PATIENTS = _Table("patients", ("Id", "BIRTHDATE"), ("DEATHDATE", "GENDER"))
_EVENT_TABLES = (
    _Table("encounters", ("START", "PATIENT", "ENCOUNTERCLASS"), ("STOP",)),
    _Table("conditions", ("START", "PATIENT", "CODE"), ("SYSTEM", "DESCRIPTION")),
    _Table("observations", ("DATE", "PATIENT", "CODE", "VALUE"), ("DESCRIPTION", "UNITS", "TYPE")),
    _Table("medications", ("START", "PATIENT", "CODE"), ("STOP", "DESCRIPTION")),
    _Table("procedures", (("START", "DATE"), "PATIENT", "CODE"), ("SYSTEM", "DESCRIPTION")),
    _Table("immunizations", ("DATE", "PATIENT", "CODE"), ("DESCRIPTION",)),
    _Table("allergies", ("START", "PATIENT", "CODE"), ("SYSTEM", "DESCRIPTION")),
    _Table("imaging_studies", ("Id", "DATE", "PATIENT", "MODALITY_CODE", "BODYSITE_CODE"),
           ("MODALITY_DESCRIPTION", "BODYSITE_DESCRIPTION")),
)


_FIX_DAMAGED = ("check that the file is a complete UTF-8 CSV (or .csv.gz); re-export it if "
                "it was cut short")


def _resolve(table: _Table, path: Path) -> _Source:
    return resolve(table, path, fix_missing=_FIX_COLUMNS, fix_damaged=_FIX_DAMAGED)


def _discover(src: Path) -> tuple[_Source, list[_Source]]:
    if not src.is_dir():
        raise DataError("no such folder", where=str(src),
                        fix="give the folder Synthea wrote its CSV files to (output/csv)")
    path = find_table(src, _PATIENTS.name)
    if path is None:
        raise DataError("required table patients.csv (or patients.csv.gz) not found",
                        where=str(src / "patients.csv"),
                        fix="give the folder Synthea wrote its CSV files to (output/csv), "
                            "exported with exporter.csv.export = true")
    patients = _resolve(_PATIENTS, path)
    if patients.empty:
        raise DataError("the file is empty", where=str(path),
                        fix="re-export the Synthea population; patients.csv needs a header "
                            "and at least one patient")
    others = []
    for table in _EVENT_TABLES:
        found = find_table(src, table.name)
        if found is not None:
            others.append(_resolve(table, found))
    return patients, others


def _parse_time_slow(column: str) -> pl.Expr:
    """ISO 8601 with Z/offset, naive date-time, or plain date -> naive UTC datetime[us]."""
    raw = pl.col(column).str.strip_chars()
    zoned = raw.str.replace(r"[Zz]$", "+00:00")
    as_utc = [
        zoned.str.to_datetime(fmt, strict=False, time_unit="us")
        .dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        for fmt in ("%Y-%m-%dT%H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M%:z")
    ]
    naive = [raw.str.to_datetime(fmt, strict=False, time_unit="us")
             for fmt in ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M")]
    date = raw.str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("us"))
    return pl.coalesce(*as_utc, *naive, date)


def _parse_times(values: pl.Series) -> pl.Series:
    """Parse a time column; null where the value is missing or not a time.

    Synthea's two spellings (``2019-02-17T05:07:38Z``, then ``2019-02-17``) are tried
    first; only the rows still unparsed go on to the next, slower parser.
    """
    parsers = (
        lambda c: c.str.to_datetime("%Y-%m-%dT%H:%M:%SZ", strict=False, time_unit="us"),
        lambda c: c.str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("us")),
        lambda c: _parse_time_slow(c.meta.output_name()),
    )
    frame = values.rename("t").to_frame()
    out = pl.Series("t", [None] * len(values), dtype=pl.Datetime("us"))
    for parse in parsers:
        todo = out.is_null() & values.is_not_null()
        if not todo.any():
            break
        rows = frame if todo.all() else frame.filter(todo)
        parsed = rows.select(parse(pl.col("t"))).to_series()
        out = parsed if todo.all() else out.scatter(todo.arg_true(), parsed)
    return out.rename(values.name)


def _system_prefix(column: str | None, default: str) -> pl.Expr:
    if column is None:
        return pl.lit(default)
    up = pl.col(column).str.strip_chars().str.to_uppercase()
    prefix = up.replace_strict(_SYSTEM_PREFIX, default=up.str.replace_all(r"[^A-Z0-9]", ""),
                               return_dtype=pl.String)
    return pl.when(prefix.is_null() | (prefix == "")).then(pl.lit(default)).otherwise(prefix)


def _col(frame: pl.DataFrame, name: str) -> pl.Expr:
    """A source column, or null when the file does not have it (optional columns)."""
    return pl.col(name) if name in frame.columns else pl.lit(None, dtype=pl.String)


def _events(
    frame: pl.DataFrame, *, time: pl.Expr, code: pl.Expr, description: pl.Expr | None = None,
    numeric: pl.Expr | None = None, text: pl.Expr | None = None, parent: pl.Expr | None = None,
    parent_description: pl.Expr | None = None,
) -> pl.DataFrame:
    """Events of one kind, plus the code's description and parent (a code with its own text)."""
    def or_null(expr: pl.Expr | None, dtype: pl.DataType) -> pl.Expr:
        return pl.lit(None, dtype=dtype) if expr is None else expr.cast(dtype)

    return frame.select(
        pl.col(S.SUBJECT_ID).cast(pl.Int64),
        time.cast(pl.Datetime("us")).alias(S.TIME),
        code.cast(pl.String).alias(S.CODE),
        or_null(numeric, pl.Float32).alias(S.NUMERIC_VALUE),
        or_null(text, pl.String).alias(S.TEXT_VALUE),
        or_null(description, pl.String).alias(_DESC),
        or_null(parent, pl.String).alias(_PARENT),
        or_null(parent_description, pl.String).alias(_PARENT_DESC),
    )


# -- per-table conversions -------------------------------------------------------------
# A converter gets a chunk that already has `subject_id`, the parsed start time `_time`
# and a non-null code column, and returns event frames made by `_events`.

_T = "_time"


@dataclass
class _Run:
    summary: ImportSummary
    # Rows kept but changed (e.g. a numeric value that did not parse): reason -> count.
    # ImportSummary has no field for these yet; they are logged at the end.
    kept_with_changes: Counter

    def drop(self, table: str, reason: str, n: int) -> None:
        self.summary.drop(f"{table}: {reason}", n)


def _end_time(frame: pl.DataFrame, column: str, table: str, run: _Run) -> pl.Series:
    if column not in frame.columns:
        return pl.Series(column, [None] * frame.height, dtype=pl.Datetime("us"))
    parsed = _parse_times(frame[column])
    run.drop(table, BAD_END_TIME, (frame[column].is_not_null() & parsed.is_null()).sum())
    return parsed


def _encounters(frame: pl.DataFrame, run: _Run) -> list[pl.DataFrame]:
    frame = frame.with_columns(
        _stop=_end_time(frame, "STOP", "encounters", run),
        _cls=pl.col("ENCOUNTERCLASS").str.strip_chars().fill_null("unknown"),
    )
    cls = pl.col("_cls")
    ended = frame.filter(pl.col("_stop").is_not_null())
    admitted = cls.is_in(list(ADMISSION_CLASSES))
    return [
        _events(frame, time=pl.col(_T), code=pl.lit("ENCOUNTER//") + cls,
                description=pl.lit("Encounter start, class ") + cls),
        _events(ended, time=pl.col("_stop"), code=pl.lit("ENCOUNTER_END//") + cls,
                description=pl.lit("Encounter end, class ") + cls),
        _events(frame.filter(admitted), time=pl.col(_T),
                code=pl.lit("HOSPITAL_ADMISSION//") + cls,
                description=pl.lit("Hospital admission, class ") + cls),
        _events(ended.filter(admitted), time=pl.col("_stop"),
                code=pl.lit("HOSPITAL_DISCHARGE//") + cls,
                description=pl.lit("Hospital discharge, class ") + cls),
    ]


def _system_coded(frame: pl.DataFrame, run: _Run) -> list[pl.DataFrame]:
    """Conditions and procedures: `<SYSTEM>/<code>` at the start time."""
    system = _system_prefix("SYSTEM" if "SYSTEM" in frame.columns else None, "SNOMEDCT")
    return [_events(frame, time=pl.col(_T), code=system + pl.lit("/") + pl.col("CODE"),
                    description=_col(frame, "DESCRIPTION"))]


def _medications(frame: pl.DataFrame, run: _Run) -> list[pl.DataFrame]:
    code = pl.lit("RxNorm/") + pl.col("CODE")
    desc = _col(frame, "DESCRIPTION")
    frame = frame.with_columns(_stop=_end_time(frame, "STOP", "medications", run))
    return [
        _events(frame, time=pl.col(_T), code=code, description=desc),
        _events(frame.filter(pl.col("_stop").is_not_null()), time=pl.col("_stop"),
                code=pl.lit("MEDICATION_END//") + code, description=pl.lit("End of ") + desc,
                parent=code, parent_description=desc),
    ]


def _immunizations(frame: pl.DataFrame, run: _Run) -> list[pl.DataFrame]:
    return [_events(frame, time=pl.col(_T), code=pl.lit("CVX/") + pl.col("CODE"),
                    description=_col(frame, "DESCRIPTION"))]


def _allergies(frame: pl.DataFrame, run: _Run) -> list[pl.DataFrame]:
    system = _system_prefix("SYSTEM" if "SYSTEM" in frame.columns else None, "SNOMEDCT")
    standard = system + pl.lit("/") + pl.col("CODE")
    desc = _col(frame, "DESCRIPTION")
    return [_events(frame, time=pl.col(_T), code=pl.lit("ALLERGY//") + standard,
                    description=pl.lit("Allergy: ") + desc, parent=standard,
                    parent_description=desc)]


def _observations(frame: pl.DataFrame, run: _Run) -> list[pl.DataFrame]:
    value = pl.col("VALUE").str.strip_chars()
    parsed = value.cast(pl.Float64, strict=False)
    kind = _col(frame, "TYPE").str.strip_chars().str.to_lowercase()
    frame = frame.with_columns(
        _val=pl.when(parsed.is_finite()).then(parsed),  # "nan" and "inf" are not values
        _unit=_col(frame, "UNITS").str.strip_chars(),
    ).with_columns(
        # TYPE says numeric; without a TYPE, a value that parses is numeric.
        _num=((kind == "numeric") | (kind.is_null() & pl.col("_val").is_not_null()))
        .fill_null(False),
    )
    num, val, unit = pl.col("_num"), pl.col("_val"), pl.col("_unit")
    unparsable = frame.select((num & value.is_not_null() & val.is_null()).sum()).item()
    if unparsable:
        run.kept_with_changes["observations: numeric value did not parse, kept in text_value"] \
            += unparsable
    loinc = pl.lit("LOINC/") + pl.col("CODE")
    has_unit = num & unit.is_not_null() & (unit != "")
    desc = _col(frame, "DESCRIPTION")
    return [_events(
        frame, time=pl.col(_T),
        code=pl.when(has_unit).then(loinc + pl.lit("//") + unit).otherwise(loinc),
        numeric=pl.when(num).then(val),
        text=pl.when(num & val.is_not_null()).then(None).otherwise(value),
        description=pl.when(has_unit).then(desc + pl.lit(" (") + unit + pl.lit(")"))
        .otherwise(desc),
        parent=pl.when(has_unit).then(loinc),
        parent_description=desc,
    )]


def _imaging(frame: pl.DataFrame, run: _Run) -> list[pl.DataFrame]:
    code = (pl.lit("IMAGING//") + pl.col("MODALITY_CODE").str.strip_chars() + pl.lit("//")
            + pl.col("BODYSITE_CODE").str.strip_chars().fill_null("unknown"))
    desc = pl.concat_str([_col(frame, "MODALITY_DESCRIPTION"), _col(frame, "BODYSITE_DESCRIPTION")],
                         separator=" of ", ignore_nulls=True)
    return [_events(frame, time=pl.col(_T), code=code, text=pl.col("Id"), description=desc)]


# table -> (start-time column, column that must be non-null, converter)
_CONVERTERS: dict[str, tuple[str, str, Callable[[pl.DataFrame, _Run], list[pl.DataFrame]]]] = {
    "encounters": ("START", "ENCOUNTERCLASS", _encounters),
    "conditions": ("START", "CODE", _system_coded),
    "observations": ("DATE", "CODE", _observations),
    "medications": ("START", "CODE", _medications),
    "procedures": ("START", "CODE", _system_coded),
    "immunizations": ("DATE", "CODE", _immunizations),
    "allergies": ("START", "CODE", _allergies),
    "imaging_studies": ("DATE", "MODALITY_CODE", _imaging),
}


# -- the import --------------------------------------------------------------------------


def convert(
    src: Path, dest: Path, *, overwrite: bool = False, chunk_rows: int = 200_000,
    progress: Progress | None = None, seed: int = 0,
) -> ImportSummary:
    """Convert the Synthea CSV export in `src` into a MEDS dataset at `dest`.

    `dest` appears complete or not at all; it must not exist unless `overwrite`.
    `seed` fixes the train/tuning/held_out assignment. Raises `DataError` for input
    that cannot be imported (no patients.csv, a missing column, an unreadable file).
    """
    started = time.perf_counter()
    src, dest = Path(src), Path(dest)
    summary = ImportSummary(source=str(src), dest=str(dest))
    reader = TableReader(summary, chunk_rows=chunk_rows, fix_damaged=_FIX_DAMAGED,
                         progress=progress, label_prefix="synthea ")
    patients, others = _discover(src)  # every header is checked before anything is written
    run = _Run(summary, Counter())
    with MEDSWriter(dest, dataset_name="synthea", etl_name=ETL_NAME, seed=seed,
                    overwrite=overwrite, inputs=(src,),
                    extra_metadata={"source_format": "synthea-csv",
                                    "subject_id_mapping": "sha256(lower(uuid))[:8] & (2^63-1)"},
                    ) as writer:
        idmap = _import_patients(patients, writer, run, reader)
        for source in others:
            _import_table(source, idmap, writer, run, reader)
        written_before_dedup = writer.rows_written
    finish_summary(summary, dest, written_before_dedup)
    for reason, n in run.kept_with_changes.items():
        log.warning("%s: %d rows", reason, n)
    summary.seconds = time.perf_counter() - started
    return summary


def _import_patients(source: _Source, writer: MEDSWriter, run: _Run,
                     reader: TableReader) -> pl.DataFrame:
    """Write the demographic events; return the patient key -> subject_id map."""
    parts: list[pl.DataFrame] = []
    for frame in reader.chunks(source):
        frame = frame.with_columns(pl.col("Id").str.strip_chars().str.to_lowercase().alias(_KEY))
        has_id = pl.col(_KEY).is_not_null() & (pl.col(_KEY) != "")
        run.drop("patients", MISSING_ID, frame.select((~has_id).sum()).item())
        frame = frame.filter(has_id)
        frame = frame.with_columns(pl.Series(S.SUBJECT_ID, [subject_id_for(k) for k in frame[_KEY]],
                                             dtype=pl.Int64))
        parts.append(frame.select(_KEY, S.SUBJECT_ID))

        frame = frame.with_columns(_birth=_parse_times(frame["BIRTHDATE"]),
                                   _death=_parse_times(frame["DEATHDATE"])
                                   if "DEATHDATE" in frame.columns
                                   else pl.lit(None, dtype=pl.Datetime("us")),
                                   _gender=_col(frame, "GENDER").str.strip_chars()
                                   .str.to_uppercase())
        run.drop("patients", MISSING_BIRTH, frame.select(pl.col("_birth").is_null().sum()).item())
        if "DEATHDATE" in frame.columns:
            bad_death = (pl.col("DEATHDATE").is_not_null() & pl.col("_death").is_null()).sum()
            run.drop("patients", BAD_DEATH, frame.select(bad_death).item())
        gendered = frame.filter(pl.col("_gender").is_not_null() & (pl.col("_gender") != ""))
        _write(writer, [
            _events(gendered, time=pl.lit(None), code=pl.lit("GENDER//") + pl.col("_gender"),
                    description=pl.lit("Gender ") + pl.col("_gender")),
            _events(frame.filter(pl.col("_birth").is_not_null()), time=pl.col("_birth"),
                    code=pl.lit(S.BIRTH_CODE), description=pl.lit("Birth")),
            _events(frame.filter(pl.col("_death").is_not_null()), time=pl.col("_death"),
                    code=pl.lit(S.DEATH_CODE), description=pl.lit("Death")),
        ])

    idmap = (pl.concat(parts) if parts else
             pl.DataFrame(schema={_KEY: pl.String, S.SUBJECT_ID: pl.Int64})).unique()
    if idmap.height == 0:
        raise DataError("no patient rows with an Id", where=str(source.path),
                        fix="re-export the Synthea population; patients.csv needs at least "
                            "one patient")
    if idmap[S.SUBJECT_ID].n_unique() != idmap.height:
        # Two different UUIDs hashed to one subject_id (odds ~ n^2 / 2^64).
        raise DataError("two patient Ids map to the same subject_id", where=str(source.path),
                        fix="report this to the fedehr maintainers with the two Ids")
    return idmap


def _import_table(source: _Source, idmap: pl.DataFrame, writer: MEDSWriter, run: _Run,
                  reader: TableReader) -> None:
    name = source.name
    time_col, needed_col, converter = _CONVERTERS[name]
    for frame in reader.chunks(source):
        frame = frame.with_columns(pl.col("PATIENT").str.strip_chars().str.to_lowercase()
                                   .alias(_KEY)).join(idmap, on=_KEY, how="left")
        known = pl.col(S.SUBJECT_ID).is_not_null()
        run.drop(name, UNKNOWN_PATIENT, frame.select((~known).sum()).item())
        frame = frame.filter(known)
        frame = frame.with_columns(_parse_times(frame[time_col]).alias(_T))
        run.drop(name, MISSING_TIME, frame.select(pl.col(_T).is_null().sum()).item())
        frame = frame.filter(pl.col(_T).is_not_null())
        has_code = pl.col(needed_col).is_not_null() & (pl.col(needed_col).str.strip_chars() != "")
        run.drop(name, MISSING_CODE, frame.select((~has_code).sum()).item())
        frame = frame.filter(has_code)
        if "CODE" in frame.columns:
            frame = frame.with_columns(pl.col("CODE").str.strip_chars())
        _write(writer, converter(frame, run))


def _write(writer: MEDSWriter, frames: list[pl.DataFrame]) -> None:
    events = pl.concat([f for f in frames if f.height], how="vertical") if any(
        f.height for f in frames) else None
    if events is None:
        return
    writer.add_events(events.select(S.SUBJECT_ID, S.TIME, S.CODE, S.NUMERIC_VALUE, S.TEXT_VALUE))
    # Code metadata: one row per code, preferring a non-null description.
    meta = pl.concat([
        events.select(pl.col(S.CODE), pl.col(_DESC), pl.col(_PARENT)),
        events.filter(pl.col(_PARENT).is_not_null())
        .select(pl.col(_PARENT).alias(S.CODE), pl.col(_PARENT_DESC).alias(_DESC),
                pl.lit(None, dtype=pl.String).alias(_PARENT)),
    ]).group_by(S.CODE).agg(pl.col(_DESC).drop_nulls().first(), pl.col(_PARENT).drop_nulls()
                            .first())
    writer.add_codes(meta[S.CODE].to_list(), meta[_DESC].to_list(),
                     [[p] if p is not None else None for p in meta[_PARENT].to_list()])
