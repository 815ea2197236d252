"""OMOP CDM 5.4 CSV export -> MEDS, on the shared source layer (`etl.source`).

Tables read (``<table>.csv`` or ``.csv.gz`` in one folder, names lower-case as the CDM DDL
writes them): person (required), death, visit_occurrence, condition_occurrence,
drug_exposure, measurement, procedure_occurrence, observation, note, and concept (the
vocabulary table, optional). The OHDSI conventions and the field names are those of the
CDM 5.4 specification; docs/etl-omop.md lists every mapping and drop reason.

Codes: a ``*_concept_id`` is written as the concept's own vocabulary and code, with the
prefixes the FHIR and Synthea ETLs use (``LOINC/2160-0``, ``SNOMEDCT/44054006``,
``RxNorm/197361``, ``ICD10CM/I50.9``), when the export has the concept table; a concept id
it does not list becomes ``OMOP/<concept_id>``; concept id 0 (no standard concept) falls
back to the ``*_source_value`` as ``<TABLE>//<source value>``. subject_id is person_id.
"""

from __future__ import annotations

import logging
from pathlib import Path
from time import perf_counter

import polars as pl
from rich.progress import Progress

from fedehr.shared.data import schema as S
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

ETL_NAME = "fedehr.omop"
_FIX_DAMAGED = "check that the file is a complete CSV (or .csv.gz); export the table again"
_FIX_COLUMNS = "export the table with the OMOP CDM 5.4 column names (see the CDM DDL)"

# OMOP vocabulary_id -> code prefix (the FHIR and Synthea ETLs' prefixes).
VOCABULARY_PREFIXES = {"SNOMED": "SNOMEDCT", "RxNorm Extension": "RxNorm", "ICD9Proc": "ICD9Proc"}
GENDER_CONCEPTS = {"8507": "M", "8532": "F"}
VISIT_CLASSES = {"9201": "inpatient", "262": "inpatient", "9202": "ambulatory",
                 "9203": "emergency", "581476": "home", "5083": "virtual"}
ADMISSION_CLASSES = ("inpatient",)

# Drop reasons (after "<table>: ").
MISSING_PERSON = "missing or unparsable person_id"
UNKNOWN_PERSON = "person_id not in person"
NO_TIME = "missing or unparsable date"
NO_CODE = "concept_id 0 and no source value"
NO_BIRTH = "no year_of_birth"

PERSON = TableSpec("person", ("person_id", "year_of_birth"),
                   ("gender_concept_id", "gender_source_value", "month_of_birth", "day_of_birth",
                    "birth_datetime"))
CONCEPT = TableSpec("concept", ("concept_id", "vocabulary_id", "concept_code"),
                    ("concept_name",))


def _spec(name: str, concept: str, dates: tuple[str, ...], extra: tuple[str, ...] = ()):
    return TableSpec(name, ("person_id", concept), (*dates, f"{concept.removesuffix('_concept_id')}"
                                                    "_source_value", *extra))


# table -> (spec, concept column, start date columns (first present wins), end columns)
EVENTS = {
    "death": (TableSpec("death", ("person_id",), ("death_datetime", "death_date")), None,
              ("death_datetime", "death_date"), ()),
    "visit_occurrence": (_spec("visit_occurrence", "visit_concept_id",
                               ("visit_start_datetime", "visit_start_date", "visit_end_datetime",
                                "visit_end_date")),
                         "visit_concept_id", ("visit_start_datetime", "visit_start_date"),
                         ("visit_end_datetime", "visit_end_date")),
    "condition_occurrence": (_spec("condition_occurrence", "condition_concept_id",
                                   ("condition_start_datetime", "condition_start_date")),
                             "condition_concept_id",
                             ("condition_start_datetime", "condition_start_date"), ()),
    "drug_exposure": (_spec("drug_exposure", "drug_concept_id",
                            ("drug_exposure_start_datetime", "drug_exposure_start_date",
                             "drug_exposure_end_datetime", "drug_exposure_end_date")),
                      "drug_concept_id",
                      ("drug_exposure_start_datetime", "drug_exposure_start_date"),
                      ("drug_exposure_end_datetime", "drug_exposure_end_date")),
    "measurement": (_spec("measurement", "measurement_concept_id",
                          ("measurement_datetime", "measurement_date"),
                          ("value_as_number", "unit_source_value", "value_source_value")),
                    "measurement_concept_id", ("measurement_datetime", "measurement_date"), ()),
    "procedure_occurrence": (_spec("procedure_occurrence", "procedure_concept_id",
                                   ("procedure_datetime", "procedure_date")),
                             "procedure_concept_id", ("procedure_datetime", "procedure_date"),
                             ()),
    "observation": (_spec("observation", "observation_concept_id",
                          ("observation_datetime", "observation_date"),
                          ("value_as_number", "value_as_string", "unit_source_value")),
                    "observation_concept_id", ("observation_datetime", "observation_date"), ()),
    "note": (TableSpec("note", ("person_id", "note_text"),
                       ("note_datetime", "note_date", "note_type_concept_id", "note_title")),
             None, ("note_datetime", "note_date"), ()),
}
TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S%.f",
                "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d")


def _time(columns: tuple[str, ...], frame: pl.DataFrame) -> pl.Expr:
    present = [c for c in columns if c in frame.columns]
    if not present:
        return pl.lit(None, pl.Datetime("us"))
    return pl.coalesce([pl.col(c).str.strip_chars().str.to_datetime(f, time_unit="us",
                                                                   strict=False)
                        for c in present for f in TIME_FORMATS])


def _prefix(vocabulary: pl.Expr) -> pl.Expr:
    return vocabulary.replace(VOCABULARY_PREFIXES).str.replace_all(r"\s+", "")


class _Import:
    def __init__(self, tables: dict[str, SourceTable], writer: MEDSWriter,
                 summary: ImportSummary, reader: TableReader):
        self.tables, self.writer, self.summary, self.reader = tables, writer, summary, reader
        self.persons = pl.Series("person", [], pl.Int64)
        self.concepts: pl.DataFrame | None = None
        self.codes: dict[str, tuple[str | None, str | None]] = {}

    def run(self) -> None:
        if "concept" in self.tables:
            c = self.reader.read_all(self.tables["concept"])
            name = pl.col("concept_name") if "concept_name" in c.columns \
                else pl.lit(None, pl.String)
            self.concepts = c.select(
                pl.col("concept_id").str.strip_chars().alias("_cid"),
                (_prefix(pl.col("vocabulary_id").str.strip_chars()) + "/"
                 + pl.col("concept_code").str.strip_chars()).alias("_concept"),
                name.alias("_concept_name"),
            ).unique("_cid")
        self.person()
        for name, (_, concept, start, end) in EVENTS.items():
            if name in self.tables:
                for chunk in self.reader.chunks(self.tables[name]):
                    self.events(name, chunk, concept, start, end)
        rows = {c: v for c, v in self.codes.items() if v[0] or v[1]}
        if rows:
            self.writer.add_codes(list(rows), [v[0] for v in rows.values()],
                                  [[v[1]] if v[1] else None for v in rows.values()])

    def drop_bad(self, name: str, frame: pl.DataFrame, bad: pl.Expr, reason: str):
        flags = frame.select(bad.fill_null(True).alias("_bad"))["_bad"]
        self.summary.drop_in(name, reason, int(flags.sum()))
        return frame.filter(~flags)

    def person(self) -> None:
        frame = self.reader.read_all(self.tables["person"])
        frame = frame.with_columns(
            pl.col("person_id").str.strip_chars().cast(pl.Int64, strict=False)
            .alias(S.SUBJECT_ID))
        frame = self.drop_bad("person", frame, pl.col(S.SUBJECT_ID).is_null(), MISSING_PERSON)
        self.persons = frame[S.SUBJECT_ID].unique()

        def part(column: str, default: int) -> pl.Expr:
            if column not in frame.columns:
                return pl.lit(default)
            return pl.col(column).str.strip_chars().cast(pl.Int32, strict=False).fill_null(
                default)

        birth = pl.datetime(pl.col("year_of_birth").str.strip_chars().cast(pl.Int32, strict=False),
                            part("month_of_birth", 1), part("day_of_birth", 1))
        if "birth_datetime" in frame.columns:
            birth = pl.coalesce(_time(("birth_datetime",), frame), birth)
        gender_id = pl.col("gender_concept_id").str.strip_chars() \
            if "gender_concept_id" in frame.columns else pl.lit(None, pl.String)
        gender = gender_id.replace_strict(GENDER_CONCEPTS, default=None, return_dtype=pl.String)
        if "gender_source_value" in frame.columns:
            source = pl.col("gender_source_value").str.strip_chars().str.to_uppercase().str.slice(
                0, 1)
            gender = pl.coalesce(gender, pl.when(source.is_in(["F", "M"])).then(source))
        frame = frame.with_columns(birth.alias("_birth"), gender.alias("_gender"))
        self.summary.drop_in("person", NO_BIRTH, int(frame["_birth"].is_null().sum()))
        null = pl.lit(None, pl.Datetime("us"))
        self.write([
            frame.filter(pl.col("_birth").is_not_null()).select(
                S.SUBJECT_ID, pl.col("_birth").alias(S.TIME), pl.lit(S.BIRTH_CODE).alias(S.CODE)),
            frame.filter(pl.col("_gender").is_not_null()).select(
                S.SUBJECT_ID, null.alias(S.TIME), ("GENDER//" + pl.col("_gender")).alias(S.CODE)),
        ])

    def code(self, name: str, frame: pl.DataFrame, concept: str | None) -> pl.DataFrame:
        """Add `_code` (and its description and parent-free metadata) to `frame`."""
        if name == "death":
            return frame.with_columns(pl.lit(S.DEATH_CODE).alias("_code"))
        if name == "note":  # the note's type, never its free-text title
            kind = pl.col("note_type_concept_id").str.strip_chars() \
                if "note_type_concept_id" in frame.columns else pl.lit(None, pl.String)
            return frame.with_columns(
                pl.when(kind.is_not_null() & (kind != "0")).then("NOTE//OMOP/" + kind)
                .otherwise(pl.lit("NOTE//OMOP")).alias("_code"))
        cid = pl.col(concept).str.strip_chars()
        source_col = f"{concept.removesuffix('_concept_id')}_source_value"
        source = pl.col(source_col).str.strip_chars() if source_col in frame.columns \
            else pl.lit(None, pl.String)
        if self.concepts is not None:
            frame = frame.with_columns(cid.alias("_cid")).join(self.concepts, on="_cid",
                                                               how="left")
            known = pl.col("_concept")
        else:
            frame = frame.with_columns(pl.lit(None, pl.String).alias("_concept_name"))
            known = pl.lit(None, pl.String)
        standard = pl.when(cid.is_not_null() & (cid != "0")).then(
            pl.coalesce(known, "OMOP/" + cid))
        fallback = pl.when(source.is_not_null() & (source != "")).then(
            name.upper() + "//" + source)
        if name == "visit_occurrence":
            cls = cid.replace_strict(VISIT_CLASSES, default=None, return_dtype=pl.String)
            return frame.with_columns(pl.coalesce(cls, source.str.to_lowercase(),
                                                  pl.lit("unknown")).alias("_code"))
        return frame.with_columns(pl.coalesce(standard, fallback).alias("_code"))

    def events(self, name: str, frame: pl.DataFrame, concept: str | None,
               start: tuple[str, ...], end: tuple[str, ...]) -> None:
        frame = frame.with_columns(
            pl.col("person_id").str.strip_chars().cast(pl.Int64, strict=False)
            .alias(S.SUBJECT_ID))
        frame = self.drop_bad(name, frame, pl.col(S.SUBJECT_ID).is_null(), MISSING_PERSON)
        frame = self.drop_bad(name, frame, ~pl.col(S.SUBJECT_ID).is_in(self.persons.implode()),
                              UNKNOWN_PERSON)
        frame = frame.with_columns(_time(start, frame).alias("_time"),
                                   _time(end, frame).alias("_end"))
        frame = self.drop_bad(name, frame, pl.col("_time").is_null(), NO_TIME)
        frame = self.code(name, frame, concept)
        frame = self.drop_bad(name, frame, pl.col("_code").is_null(), NO_CODE)
        if "_concept_name" in frame.columns and name != "visit_occurrence":
            for code, desc in frame.select("_code", "_concept_name").unique("_code").iter_rows():
                if code not in self.codes or (self.codes[code][0] is None and desc):
                    self.codes[code] = (desc, None)
        numeric = pl.lit(None, pl.Float64)
        text = pl.lit(None, pl.String)
        code = pl.col("_code")
        if "value_as_number" in frame.columns:
            numeric = pl.col("value_as_number").str.strip_chars().cast(pl.Float64, strict=False)
        if name == "measurement" and "unit_source_value" in frame.columns:
            unit = pl.col("unit_source_value").str.strip_chars()
            with_unit = numeric.is_not_null() & unit.is_not_null() & (unit != "")
            for c, u in frame.filter(frame.select(with_unit.fill_null(False)).to_series()) \
                    .select("_code", unit.alias("u")).unique().iter_rows():
                self.codes.setdefault(f"{c}//{u}", (None, c))
            code = pl.when(with_unit).then(code + "//" + unit).otherwise(code)
        if "value_as_string" in frame.columns:
            text = pl.when(numeric.is_null()).then(pl.col("value_as_string"))
        if "value_source_value" in frame.columns:
            text = pl.when(numeric.is_null()).then(pl.col("value_source_value"))
        if name == "note":
            text = pl.col("note_text")
        out = [frame.select(S.SUBJECT_ID, pl.col("_time").alias(S.TIME), code.alias(S.CODE),
                            numeric.cast(pl.Float32).alias(S.NUMERIC_VALUE),
                            text.alias(S.TEXT_VALUE))]
        ended = frame.filter(pl.col("_end").is_not_null())
        if name == "drug_exposure":
            for c in ended["_code"].unique().to_list():
                self.codes.setdefault(f"MEDICATION_END//{c}", (None, c))
            out.append(ended.select(S.SUBJECT_ID, pl.col("_end").alias(S.TIME),
                                    ("MEDICATION_END//" + pl.col("_code")).alias(S.CODE)))
        if name == "visit_occurrence":
            admitted = pl.col("_code").is_in(list(ADMISSION_CLASSES))
            out = [frame.select(S.SUBJECT_ID, pl.col("_time").alias(S.TIME),
                                ("ENCOUNTER//" + pl.col("_code")).alias(S.CODE)),
                   ended.select(S.SUBJECT_ID, pl.col("_end").alias(S.TIME),
                                ("ENCOUNTER_END//" + pl.col("_code")).alias(S.CODE)),
                   frame.filter(admitted).select(
                       S.SUBJECT_ID, pl.col("_time").alias(S.TIME),
                       ("HOSPITAL_ADMISSION//" + pl.col("_code")).alias(S.CODE)),
                   ended.filter(admitted).select(
                       S.SUBJECT_ID, pl.col("_end").alias(S.TIME),
                       ("HOSPITAL_DISCHARGE//" + pl.col("_code")).alias(S.CODE))]
        self.write(out)

    def write(self, frames: list[pl.DataFrame]) -> None:
        cols = {S.SUBJECT_ID: pl.Int64, S.TIME: pl.Datetime("us"), S.CODE: pl.String,
                S.NUMERIC_VALUE: pl.Float32, S.TEXT_VALUE: pl.String}
        full = [f.with_columns([pl.lit(None, t).alias(c) for c, t in cols.items()
                                if c not in f.columns]).select(
            [pl.col(c).cast(t) for c, t in cols.items()]) for f in frames if f.height]
        if full:
            self.writer.add_events(pl.concat(full))


def convert(
    src: Path, dest: Path, *, overwrite: bool = False, chunk_rows: int = 200_000,
    progress: Progress | None = None, seed: int = 0,
) -> ImportSummary:
    """Convert the OMOP CDM 5.4 CSV export in `src` into a MEDS dataset at `dest`.

    Raises `DataError` (nothing written) when person is missing, a table lacks a required
    column or cannot be read, or `dest` exists and `overwrite` is false.
    """
    started = perf_counter()
    src, dest = Path(src), Path(dest)
    if not src.is_dir():
        raise DataError("no such folder", where=str(src),
                        fix="give the folder that holds the OMOP CDM tables (person.csv, ...)")
    summary = ImportSummary(source=str(src), dest=str(dest))
    reader = TableReader(summary, chunk_rows=chunk_rows, fix_damaged=_FIX_DAMAGED,
                         progress=progress, label_prefix="omop ")
    tables: dict[str, SourceTable] = {}
    for spec in (PERSON, CONCEPT, *(e[0] for e in EVENTS.values())):
        path = find_table(src, spec.name)
        if path is None:
            if spec is PERSON:
                raise DataError("required table person.csv (or person.csv.gz) not found",
                                where=str(src / "person.csv"),
                                fix="export the OMOP person table into this folder")
            summary.skipped_tables.append(spec.name)
            continue
        found = resolve(spec, path, fix_missing=_FIX_COLUMNS, fix_damaged=_FIX_DAMAGED)
        if not found.empty:
            tables[spec.name] = found
    with MEDSWriter(dest, dataset_name="omop", etl_name=ETL_NAME, seed=seed,
                    overwrite=overwrite, inputs=(src,),
                    extra_metadata={"source_format": "OMOP CDM 5.4 CSV"}) as writer:
        _Import(tables, writer, summary, reader).run()
        rows_given = writer.rows_written
    finish_summary(summary, dest, rows_given)
    summary.seconds = perf_counter() - started
    return summary
