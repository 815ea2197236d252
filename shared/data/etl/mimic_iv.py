"""Converts MIMIC-IV (v2.2 and 3.x, official PhysioNet CSV layout) into a MEDS dataset.

Codes follow the community MIMIC-IV MEDS ETL (Medical-Event-Data-Standard/MIMIC_IV_MEDS,
its pre-0.7 event configs): ``GENDER//F``, ``MEDS_BIRTH``, ``HOSPITAL_ADMISSION//...``,
``DIAGNOSIS//ICD//10//I10`` stamped at the admission's discharge time, ``LAB//50912//mg/dL``
and so on; docs/etl-mimic-iv.md lists them all and says what is dropped.

How it runs: every table is streamed in chunks of `chunk_rows` rows by the shared source
layer (`etl.source`: ``.csv`` or ``.csv.gz``, every column read as text so that one
dirty value never stops an import); polars turns each chunk into events, and the
`MEDSWriter` spills them to a staging folder that replaces `dest` only when the whole
import succeeded. Only three things are held in memory: the patients and admissions
tables (small; diagnoses need an admission's discharge time) and the distinct codes
seen, which become ``metadata/codes.parquet`` together with the d_* dictionaries. A lab's
LOINC parent is ``d_labitems.loinc_code``, else the shipped itemid -> LOINC table
(`etl.lab_loinc`; the demo 2.2 export and 3.x have no loinc_code); an infusion's RxNorm
parent comes from the shipped itemid -> RxNorm table of the same module.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter

import polars as pl
from rich.progress import Progress

from fedehr.shared.data import schema as S
from fedehr.shared.data.etl.lab_loinc import inputitem_rxnorm, labitem_loinc
from fedehr.shared.data.etl.source import (
    SourceTable,
    TableReader,
    TableSpec,
    find_table,
    finish_summary,
    resolve,
)
from fedehr.shared.data.etl.summary import ImportSummary
from fedehr.shared.data.writer import MEDSWriter
from fedehr.shared.errors import DataError

log = logging.getLogger(__name__)

ETL_NAME = "fedehr.mimic_iv"
UNKNOWN = "UNK"
TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d")
_FLOAT32_MAX = 3.4028234663852886e38
_FIX_ROOT = "point the import at the MIMIC-IV root folder, the one that holds hosp/ and icu/"
_FIX_DAMAGED = ("the file is damaged or is not an official MIMIC-IV CSV; download it again and "
                "check it against SHA256SUMS.txt")


Table = TableSpec  # one source file and the columns the conversion reads from it


PATIENTS = Table("hosp/patients", ("subject_id", "gender", "anchor_age", "anchor_year"), ("dod",))
ADMISSIONS = Table(
    "hosp/admissions",
    ("subject_id", "hadm_id", "admittime", "dischtime", "admission_type", "admission_location",
     "discharge_location"),
    ("deathtime",),
)
EVENT_TABLES = (
    Table("hosp/transfers", ("subject_id", "eventtype", "careunit", "intime")),
    Table("hosp/diagnoses_icd", ("subject_id", "hadm_id", "icd_code", "icd_version")),
    Table("hosp/procedures_icd", ("subject_id", "chartdate", "icd_code", "icd_version")),
    Table("hosp/labevents",
          ("subject_id", "itemid", "charttime", "value", "valuenum", "valueuom")),
    Table("hosp/prescriptions", ("subject_id", "starttime", "drug")),
    Table("hosp/omr", ("subject_id", "chartdate", "result_name", "result_value")),
    Table("icu/icustays", ("subject_id", "first_careunit", "last_careunit", "intime", "outtime")),
    Table("icu/chartevents",
          ("subject_id", "itemid", "charttime", "value", "valuenum", "valueuom")),
    Table("icu/inputevents", ("subject_id", "itemid", "starttime", "endtime", "amount", "rate")),
    Table("icu/outputevents", ("subject_id", "itemid", "charttime", "value", "valueuom")),
    Table("icu/procedureevents", ("subject_id", "itemid", "starttime")),
)
DICTIONARIES = (
    Table("hosp/d_icd_diagnoses", ("icd_code", "icd_version", "long_title")),
    Table("hosp/d_icd_procedures", ("icd_code", "icd_version", "long_title")),
    Table("hosp/d_labitems", ("itemid", "label"), ("fluid", "category", "loinc_code")),
    Table("icu/d_items", ("itemid", "label")),
)
FIXED_DESCRIPTIONS = {
    S.BIRTH_CODE: "Birth (year of birth = anchor_year - anchor_age, placed on 1 January)",
    S.DEATH_CODE: "Death (admissions.deathtime, else patients.dod)",
    "GENDER//F": "Female",
    "GENDER//M": "Male",
}


def convert(
    src: Path,
    dest: Path,
    *,
    overwrite: bool = False,
    chunk_rows: int = 200_000,
    progress: Progress | None = None,
    seed: int = 0,
) -> ImportSummary:
    """Convert the MIMIC-IV CSV folder `src` into a MEDS dataset at `dest`.

    Raises `DataError` (nothing written at `dest`) when a required table or column is
    missing, a file cannot be read, or `dest` exists and `overwrite` is false.
    """
    src, dest = Path(src), Path(dest)
    started = perf_counter()
    summary = ImportSummary(source=str(src), dest=str(dest))
    reader = TableReader(summary, chunk_rows=chunk_rows, fix_damaged=_FIX_DAMAGED,
                         progress=progress)
    files = _locate(src)  # checks every header before anything is written
    version = _guess_version(src, files)
    with MEDSWriter(dest, dataset_name="MIMIC-IV", etl_name=ETL_NAME,
                    dataset_version=version, seed=seed, overwrite=overwrite, inputs=(src,),
                    extra_metadata={"source_layout": "MIMIC-IV CSV (hosp/, icu/)"}) as writer:
        run = _Import(files, writer, summary, reader)
        run.all()
    finish_summary(summary, dest, writer.rows_written)
    summary.seconds = perf_counter() - started
    return summary


# -- finding and reading files ---------------------------------------------------------------


@dataclass
class _Files:
    tables: dict[str, SourceTable] = field(default_factory=dict)  # table name -> its file
    skipped: list[str] = field(default_factory=list)


def _locate(src: Path) -> _Files:
    if not src.is_dir():
        raise DataError("no such folder", where=str(src), fix=_FIX_ROOT)
    files = _Files()
    for table in (PATIENTS, ADMISSIONS, *EVENT_TABLES, *DICTIONARIES):
        path = find_table(src, table.name)
        if path is None:
            if table in (PATIENTS, ADMISSIONS):
                raise DataError(
                    "required table not found",
                    where=str(src / f"{table.name}.csv.gz"),
                    fix=f"{_FIX_ROOT}; {table.name}.csv or .csv.gz must be there",
                )
            files.skipped.append(table.name)
            continue
        fix = (f"give the official MIMIC-IV {table.name} file; it must have the "
               f"columns {', '.join(table.required)}")
        found = resolve(table, path, fix_missing=fix, fix_damaged=_FIX_DAMAGED)
        if found.empty:
            raise DataError(f"missing column '{table.required[0]}' (the file has no header)",
                            where=str(path), fix=fix)
        files.tables[table.name] = found
    return files


def _guess_version(src: Path, files: _Files) -> str:
    match = re.search(r"(\d+\.\d+)", src.name)  # physionet.org/files/mimiciv/2.2
    if match:
        return match.group(1)
    if "hosp/d_labitems" in files.tables:  # 3.x (and the demo 2.2) lack d_labitems.loinc_code
        return "2.x" if "loinc_code" in files.tables["hosp/d_labitems"].columns else "3.x"
    return "unknown"


# -- expressions -----------------------------------------------------------------------------


def _text(column: str) -> pl.Expr:
    """A trimmed text column, empty text as null."""
    value = pl.col(column).str.strip_chars()
    return pl.when(value != "").then(value)


def _int(column: str) -> pl.Expr:
    return pl.col(column).str.strip_chars().cast(pl.Int64, strict=False)


def _number(column: str) -> pl.Expr:
    """A float column; text that is not a finite float32 number becomes null."""
    value = pl.col(column).str.strip_chars().cast(pl.Float64, strict=False)
    return pl.when(value.is_finite() & (value.abs() <= _FLOAT32_MAX)).then(value)


def _time(column: str) -> pl.Expr:
    value = pl.col(column).str.strip_chars()
    return pl.coalesce([value.str.to_datetime(f, time_unit="us", strict=False)
                        for f in TIME_FORMATS])


def _code(*parts: pl.Expr | str) -> pl.Expr:
    return pl.concat_str([pl.lit(p) if isinstance(p, str) else p for p in parts], separator="//")


def _text_unless_numeric(text_column: str, numeric: pl.Expr) -> pl.Expr:
    return pl.when(numeric.is_null()).then(pl.col(text_column))


def _time_checks(column: str) -> list[tuple[pl.Expr, str]]:
    return [(pl.col(column).is_null(), f"missing {column}"),
            (pl.col("_time").is_null(), f"unparsable {column}")]


def dotted_icd(code: str, version: int | str) -> str:
    """Insert the ICD-CM dot: after 3 characters (ICD-10, ICD-9 numeric and V), 4 (ICD-9 E)."""
    code = code.strip().replace(".", "").upper()
    cut = 4 if str(version) == "9" and code.startswith("E") else 3
    return code if len(code) <= cut else f"{code[:cut]}.{code[cut:]}"


def _icd_procedure_parent(code: str, version: int | str) -> str:
    code = code.strip().replace(".", "").upper()
    if str(version) == "9":
        return f"ICD9Proc/{code[:2]}.{code[2:]}" if len(code) > 2 else f"ICD9Proc/{code}"
    return f"ICD10PCS/{code}"


# -- the import ------------------------------------------------------------------------------


class _Import:
    """State of one conversion: known subjects, admissions, the codes seen so far."""

    def __init__(self, files: _Files, writer: MEDSWriter, summary: ImportSummary,
                 reader: TableReader):
        self.files = files
        self.writer = writer
        self.summary = summary
        self.reader = reader
        self.subjects = pl.Series(S.SUBJECT_ID, [], dtype=pl.Int64)
        self.admissions = pl.DataFrame()
        self.code_keys: dict[str, list[pl.DataFrame]] = {}  # dictionary -> frames of code+key
        self.seen_codes: set[str] = set()

    # streaming --------------------------------------------------------------------------
    def read(self, name: str) -> Iterator[pl.DataFrame]:
        return self.reader.chunks(self.files.tables[name])

    def read_all(self, name: str) -> pl.DataFrame:
        return self.reader.read_all(self.files.tables[name])

    def known_subjects(self, name: str, df: pl.DataFrame) -> pl.DataFrame:
        """Parse subject_id; drop (and count) rows without one or of no known patient."""
        df = df.with_columns(_int("subject_id").alias(S.SUBJECT_ID))
        missing = df[S.SUBJECT_ID].is_null()
        self.summary.drop(f"{name}: missing or unparsable subject_id", int(missing.sum()))
        df = df.filter(~missing)
        known = df[S.SUBJECT_ID].is_in(self.subjects.implode())
        self.summary.drop(f"{name}: subject not in hosp/patients", int((~known).sum()))
        return df.filter(known)

    def events(self, name: str, df: pl.DataFrame, *, code: pl.Expr, time: pl.Expr | None,
               checks: list[tuple[pl.Expr, str]] = (), numeric: pl.Expr | None = None,
               text: pl.Expr | None = None, keys: dict[str, pl.Expr] | None = None,
               dictionary: str | None = None) -> pl.DataFrame:
        """One kind of event from one chunk. `checks` are (row is bad, reason) in order; a
        bad row is dropped and counted once, under the first reason that applies. `keys`
        are remembered with each code to look its description up in `dictionary` later."""
        null_time = pl.lit(None, dtype=pl.Datetime("us"))
        df = df.with_columns((null_time if time is None else time).alias("_time"),
                             code.alias("_code"))
        checks = [*checks, (pl.col("_code").is_null(), "missing code part")]
        flags = [c.fill_null(True).alias(f"_bad{i}") for i, (c, _) in enumerate(checks)]
        df = df.with_columns(flags)
        counts, prior = [], pl.lit(False)
        for i in range(len(checks)):
            counts.append((pl.col(f"_bad{i}") & ~prior).sum().alias(f"_n{i}"))
            prior = prior | pl.col(f"_bad{i}")
        for (_, reason), n in zip(checks, df.select(counts).row(0), strict=True):
            self.summary.drop(f"{name}: {reason}", int(n))
        df = df.filter(~prior)
        out = df.select(
            pl.col(S.SUBJECT_ID), pl.col("_time").alias(S.TIME), pl.col("_code").alias(S.CODE),
            (numeric if numeric is not None else pl.lit(None, pl.Float64))
            .cast(pl.Float32).alias(S.NUMERIC_VALUE),
            (text if text is not None else pl.lit(None, pl.String)).alias(S.TEXT_VALUE),
        )
        if dictionary is not None and keys:
            found = df.select(pl.col("_code").alias("code"), **keys).unique()
            self.code_keys.setdefault(dictionary, []).append(found)
            if len(self.code_keys[dictionary]) > 64:
                self.code_keys[dictionary] = [pl.concat(self.code_keys[dictionary]).unique()]
        return out

    def write(self, frames: list[pl.DataFrame]) -> None:
        frames = [f for f in frames if f.height]
        if not frames:
            return
        events = pl.concat(frames)
        self.seen_codes.update(events[S.CODE].unique().to_list())
        self.writer.add_events(events)

    # tables -----------------------------------------------------------------------------
    def all(self) -> None:
        patients = self.read_all(PATIENTS.name)
        admissions = self.read_all(ADMISSIONS.name)
        self.patients_and_admissions(patients, admissions)
        for table in EVENT_TABLES:
            if table.name not in self.files.tables:
                continue
            handler = getattr(self, table.name.split("/")[1])
            for chunk in self.read(table.name):
                self.write(handler(table.name, self.known_subjects(table.name, chunk)))
        self.code_metadata()
        if self.files.skipped:
            log.info("MIMIC-IV tables not found, skipped: %s", ", ".join(self.files.skipped))
        # ImportSummary has no field for this yet; the CLI may show it when it has one.
        self.summary.skipped_tables = list(self.files.skipped)

    def patients_and_admissions(self, patients: pl.DataFrame, admissions: pl.DataFrame) -> None:
        p, a = PATIENTS.name, ADMISSIONS.name
        patients = patients.with_columns(_int("subject_id").alias(S.SUBJECT_ID))
        bad = patients[S.SUBJECT_ID].is_null()
        self.summary.drop(f"{p}: missing or unparsable subject_id", int(bad.sum()))
        patients = patients.filter(~bad)
        self.subjects = patients[S.SUBJECT_ID].unique()

        admissions = self.known_subjects(a, admissions)
        if "deathtime" not in admissions.columns:
            admissions = admissions.with_columns(pl.lit(None, pl.String).alias("deathtime"))
        self.admissions = admissions.select(
            _int("hadm_id").alias("hadm_id"), _time("dischtime").alias("dischtime"),
        ).filter(pl.col("hadm_id").is_not_null()).unique("hadm_id", keep="first")
        deaths = (admissions.select(pl.col(S.SUBJECT_ID), _time("deathtime").alias("deathtime"))
                  .drop_nulls().group_by(S.SUBJECT_ID).agg(pl.col("deathtime").min()))

        gender = _text("gender").str.to_uppercase()
        birth_year = _int("anchor_year") - _int("anchor_age")
        frames = [
            self.events(p, patients, code=_code("GENDER", gender), time=None,
                        checks=[(~gender.is_in(["F", "M"]), "missing or unknown gender")]),
            self.events(p, patients, code=pl.lit(S.BIRTH_CODE), time=pl.datetime(birth_year, 1, 1),
                        checks=[(birth_year.is_null() | ~birth_year.is_between(1, 9998),
                                 "unparsable anchor_year or anchor_age")]),
        ]
        dod = _time("dod") if "dod" in patients.columns else pl.lit(None, pl.Datetime("us"))
        raw_dod = pl.col("dod") if "dod" in patients.columns else pl.lit(None, pl.String)
        with_death = patients.join(deaths, on=S.SUBJECT_ID, how="left").with_columns(
            pl.coalesce(pl.col("deathtime"), dod).alias("_death"))
        self.summary.drop(f"{p}: unparsable dod", int(with_death.select(
            (raw_dod.is_not_null() & pl.col("_death").is_null()).sum()).item()))
        frames.append(self.events(p, with_death.filter(pl.col("_death").is_not_null()),
                                  code=pl.lit(S.DEATH_CODE), time=pl.col("_death")))
        self.write(frames)

        admission = _code("HOSPITAL_ADMISSION", _text("admission_type").fill_null(UNKNOWN),
                          _text("admission_location").fill_null(UNKNOWN))
        discharge = _code("HOSPITAL_DISCHARGE", _text("discharge_location").fill_null(UNKNOWN))
        self.write([
            self.events(a, admissions, code=admission, time=_time("admittime"),
                        checks=_time_checks("admittime")),
            self.events(a, admissions, code=discharge, time=_time("dischtime"),
                        checks=_time_checks("dischtime")),
        ])

    def transfers(self, name: str, df: pl.DataFrame) -> list[pl.DataFrame]:
        code = _code("TRANSFER_TO", _text("eventtype"), _text("careunit").fill_null(UNKNOWN))
        return [self.events(name, df, code=code, time=_time("intime"),
                            checks=[*_time_checks("intime"),
                                    (_text("eventtype").is_null(), "missing eventtype")])]

    def _icd(self, name: str, df: pl.DataFrame, prefix: str, time: pl.Expr,
             checks: list[tuple[pl.Expr, str]], dictionary: str) -> list[pl.DataFrame]:
        icd = _text("icd_code").str.replace_all(".", "", literal=True).str.to_uppercase()
        version = _text("icd_version")
        return [self.events(
            name, df, code=_code(prefix, "ICD", version, icd), time=time,
            checks=[(icd.is_null(), "missing icd_code"),
                    (~version.is_in(["9", "10"]), "unknown icd_version (not 9 or 10)"), *checks],
            keys={"icd_version": version, "icd_code": icd}, dictionary=dictionary)]

    def diagnoses_icd(self, name: str, df: pl.DataFrame) -> list[pl.DataFrame]:
        df = df.with_columns(_int("hadm_id").alias("_hadm")).join(
            self.admissions, left_on="_hadm", right_on="hadm_id", how="left")
        return self._icd(name, df, "DIAGNOSIS", pl.col("dischtime"),
                         [(pl.col("_hadm").is_null(), "missing hadm_id"),
                          (pl.col("dischtime").is_null(),
                           "admission unknown or without dischtime")],
                         "hosp/d_icd_diagnoses")

    def procedures_icd(self, name: str, df: pl.DataFrame) -> list[pl.DataFrame]:
        return self._icd(name, df, "PROCEDURE", _time("chartdate"), _time_checks("chartdate"),
                         "hosp/d_icd_procedures")

    def _measurement(self, name: str, df: pl.DataFrame, prefix: str, dictionary: str,
                     value: str = "value", valuenum: str = "valuenum") -> list[pl.DataFrame]:
        numeric = _number(valuenum)
        itemid = _int("itemid")
        return [self.events(
            name, df, code=_code(prefix, itemid.cast(pl.String),
                                 _text("valueuom").fill_null(UNKNOWN)),
            time=_time("charttime"),
            checks=[(itemid.is_null(), "missing or unparsable itemid"),
                    *_time_checks("charttime")],
            numeric=numeric, text=_text_unless_numeric(value, numeric),
            keys={"itemid": itemid}, dictionary=dictionary)]

    def labevents(self, name: str, df: pl.DataFrame) -> list[pl.DataFrame]:
        return self._measurement(name, df, "LAB", "hosp/d_labitems")

    def chartevents(self, name: str, df: pl.DataFrame) -> list[pl.DataFrame]:
        # LAB, as the community ETL (and so the public anchor) codes chart events: a
        # CHARTEVENT prefix put 79% of the real demo's events outside the vocabulary.
        return self._measurement(name, df, "LAB", "icu/d_items")

    def outputevents(self, name: str, df: pl.DataFrame) -> list[pl.DataFrame]:
        return self._measurement(name, df, "SUBJECT_FLUID_OUTPUT", "icu/d_items",
                                 valuenum="value")

    def prescriptions(self, name: str, df: pl.DataFrame) -> list[pl.DataFrame]:
        return [self.events(name, df, code=_code("MEDICATION", "START", _text("drug")),
                            time=_time("starttime"),
                            checks=[(_text("drug").is_null(), "missing drug"),
                                    *_time_checks("starttime")])]

    def omr(self, name: str, df: pl.DataFrame) -> list[pl.DataFrame]:
        numeric = _number("result_value")
        return [self.events(name, df, code=_text("result_name"), time=_time("chartdate"),
                            checks=[(_text("result_name").is_null(), "missing result_name"),
                                    *_time_checks("chartdate")],
                            numeric=numeric,
                            text=_text_unless_numeric("result_value", numeric))]

    def icustays(self, name: str, df: pl.DataFrame) -> list[pl.DataFrame]:
        return [
            self.events(name, df, code=_code("ICU_ADMISSION",
                                             _text("first_careunit").fill_null(UNKNOWN)),
                        time=_time("intime"), checks=_time_checks("intime")),
            self.events(name, df, code=_code("ICU_DISCHARGE",
                                             _text("last_careunit").fill_null(UNKNOWN)),
                        time=_time("outtime"), checks=_time_checks("outtime")),
        ]

    def _item_event(self, name: str, df: pl.DataFrame, prefix: str, time_column: str,
                    numeric: pl.Expr | None = None) -> pl.DataFrame:
        itemid = _int("itemid")
        return self.events(name, df, code=_code(prefix, itemid.cast(pl.String)),
                           time=_time(time_column),
                           checks=[(itemid.is_null(), "missing or unparsable itemid"),
                                   *_time_checks(time_column)],
                           numeric=numeric, keys={"itemid": itemid}, dictionary="icu/d_items")

    def inputevents(self, name: str, df: pl.DataFrame) -> list[pl.DataFrame]:
        return [self._item_event(name, df, "INFUSION_START", "starttime", _number("rate")),
                self._item_event(name, df, "INFUSION_END", "endtime", _number("amount"))]

    def procedureevents(self, name: str, df: pl.DataFrame) -> list[pl.DataFrame]:
        return [self._item_event(name, df, "PROCEDURE//START", "starttime")]

    # code metadata ----------------------------------------------------------------------
    def code_metadata(self) -> None:
        rows: dict[str, tuple[str | None, list[str] | None]] = {
            c: (d, None) for c, d in FIXED_DESCRIPTIONS.items() if c in self.seen_codes}
        for dictionary, frames in self.code_keys.items():
            keys = pl.concat(frames).unique()
            if dictionary.startswith("hosp/d_icd"):
                rows.update(self._icd_metadata(dictionary, keys))
            else:
                rows.update(self._item_metadata(dictionary, keys))
        rows = {c: v for c, v in rows.items() if v[0] is not None or v[1]}
        if rows:
            self.writer.add_codes(list(rows), [v[0] for v in rows.values()],
                                  [v[1] for v in rows.values()])

    def _dictionary(self, name: str) -> pl.DataFrame | None:
        return self.read_all(name) if name in self.files.tables else None

    def _icd_metadata(self, name: str, keys: pl.DataFrame) -> dict:
        diagnosis = name == "hosp/d_icd_diagnoses"
        titles: dict[tuple[str, str], str] = {}
        table = self._dictionary(name)
        if table is not None:
            table = table.select(_text("icd_version").alias("v"),
                                 _text("icd_code").str.replace_all(".", "", literal=True)
                                 .str.to_uppercase().alias("c"),
                                 _text("long_title").alias("t")).drop_nulls()
            titles = {(v, c): t for v, c, t in table.iter_rows()}
        out = {}
        for code, version, icd in keys.select("code", "icd_version", "icd_code").iter_rows():
            parent = (f"ICD{version}CM/{dotted_icd(icd, version)}" if diagnosis
                      else _icd_procedure_parent(icd, version))
            out[code] = (titles.get((version, icd)), [parent])
        return out

    def _item_metadata(self, name: str, keys: pl.DataFrame) -> dict:
        table = self._dictionary(name)
        if table is None:
            table = pl.DataFrame(schema={"itemid": pl.String, "label": pl.String})
        has = set(table.columns)
        label = _text("label")
        detail = pl.concat_str([_text(c) for c in ("fluid", "category") if c in has]
                               or [pl.lit(None, pl.String)], separator=", ", ignore_nulls=True)
        description = pl.when(detail.str.len_chars() > 0).then(
            pl.format("{} ({})", label, detail)).otherwise(label)
        loinc = _text("loinc_code") if "loinc_code" in has else pl.lit(None, pl.String)
        table = table.select(
            _int("itemid").alias("itemid"), description.alias("description"),
            loinc.alias("loinc"),
        ).drop_nulls("itemid").unique("itemid", keep="first")
        joined = keys.join(table, on="itemid", how="left")
        if name == "hosp/d_labitems":
            # The export's own loinc_code wins; where it has none (demo 2.2, 3.x, blanks),
            # the shipped itemid -> LOINC table of the public anchor fills in.
            shipped = labitem_loinc()
            fallback = pl.Series([shipped.get(i) for i in joined["itemid"]], dtype=pl.String)
            joined = joined.with_columns(pl.coalesce("loinc", fallback).alias("loinc"))
        joined = joined.with_columns((pl.lit("LOINC/") + pl.col("loinc")).alias("parent"))
        if name == "icu/d_items":
            # Infusions get the RxNorm parents the anchor gives them (d_items has none).
            rxnorm = inputitem_rxnorm()
            drug = pl.Series([rxnorm.get(i) for i in joined["itemid"]], dtype=pl.String)
            joined = joined.with_columns(
                pl.when(pl.col("code").str.starts_with("INFUSION_"))
                .then(pl.lit("RxNorm/") + drug).otherwise(pl.col("parent")).alias("parent"))
        return {code: (desc, [parent] if parent else None)
                for code, desc, parent in joined.select("code", "description", "parent")
                .iter_rows()}
