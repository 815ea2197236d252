"""The source layer every ETL stands on: finding a table's file, reading its header,
streaming it in chunks, and counting what was read and dropped (issue 19, section 4).

An ETL declares its tables as `TableSpec`s and keeps only its mapping; everything about
files is decided here, once:

- A table ``<name>`` is the file ``<name>.csv`` or ``<name>.csv.gz`` in the source folder.
  When both exist the import stops (`DataError`): the two may differ, and a silent choice
  would import one without saying which. Keep one.
- Headers are read as UTF-8 (a BOM is ignored), names trimmed and matched without regard
  to case; a spec may list several spellings of one column, the first is the name the ETL
  sees (`SourceTable.columns` maps it to the header's spelling).
- Chunks are exactly `chunk_rows` rows (the last one shorter), every column as text, empty
  text as null, read by pyarrow's streaming CSV reader (plain or gzip) in 1 MiB blocks, so
  memory stays bounded whatever the file's size. A row with the wrong number of fields is
  skipped and counted under `MALFORMED_ROW`; a damaged file (cut-short gzip, broken
  quoting) is a `DataError` naming it.
- Drop reasons are ``"<table>: <reason>"`` in `ImportSummary.rows_dropped`; a table's
  rows read (`ImportSummary.tables`) include its malformed rows, and its progress task
  ends at that same number.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from rich.progress import Progress

from fedehr.shared.data import schema as S
from fedehr.shared.data.etl.summary import DUPLICATE_EVENTS, ImportSummary
from fedehr.shared.errors import DataError

MALFORMED_ROW = "malformed CSV row (wrong number of fields)"
SUFFIXES = (".csv", ".csv.gz")
BLOCK_BYTES = 1 << 20


def stable_subject_id(patient_key: str) -> int:
    """A source's patient identifier (a Synthea UUID, a FHIR Patient.id) as a MEDS
    subject_id: ``int.from_bytes(sha256(key.strip().lower())[:8], "big") & (2**63 - 1)``, a
    positive int64 that is the same on every run and machine, and the same for one patient
    whether it comes from Synthea's CSV or its FHIR export."""
    digest = hashlib.sha256(patient_key.strip().lower().encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


@dataclass(frozen=True)
class TableSpec:
    """One source table: its name (a path under the source folder, without suffix) and the
    columns the conversion reads. A tuple entry lists accepted spellings, first preferred."""

    name: str
    required: tuple[str | tuple[str, ...], ...]
    optional: tuple[str, ...] = ()


@dataclass(frozen=True)
class SourceTable:
    """A table found in the source: its file and header resolved to the spec's names."""

    spec: TableSpec
    path: Path
    columns: dict[str, str]  # the ETL's name -> the name in the file's header
    empty: bool = False  # no header at all

    @property
    def name(self) -> str:
        return self.spec.name


def find_table(src: Path, name: str) -> Path | None:
    """``<name>.csv`` or ``<name>.csv.gz`` under `src`; None if neither; DataError if both."""
    plain, gz = (src / f"{name}{s}" for s in SUFFIXES)
    if plain.is_file() and gz.is_file():
        raise DataError(f"both {plain.name} and {gz.name} are present", where=str(plain.parent),
                        fix=f"keep one of the two files (delete or move {plain.name} or "
                            f"{gz.name})")
    return plain if plain.is_file() else gz if gz.is_file() else None


def read_header(path: Path, fix: str) -> list[str]:
    """The column names of a CSV (plain or .gz) as written; [] for an empty file."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as fh:
            return next(csv.reader(fh), [])
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read the header ({exc})", where=str(path), fix=fix) from None


def resolve(spec: TableSpec, path: Path, *, fix_missing: str, fix_damaged: str) -> SourceTable:
    """Match the file's header against `spec`; a missing required column is a DataError.
    A file without any header gives an empty table (the ETL decides whether that is fine)."""
    header = read_header(path, fix_damaged)
    if not header:
        return SourceTable(spec, path, {}, empty=True)
    by_upper = {h.strip().upper(): h for h in header}
    columns: dict[str, str] = {}
    for want in spec.required:
        spellings = want if isinstance(want, tuple) else (want,)
        found = next((by_upper[s.upper()] for s in spellings if s.upper() in by_upper), None)
        if found is None:
            raise DataError(f"missing column '{'/'.join(spellings)}'", where=str(path),
                            fix=fix_missing)
        columns[spellings[0]] = found
    for want in spec.optional:
        if want.upper() in by_upper:
            columns[want] = by_upper[want.upper()]
    return SourceTable(spec, path, columns)


def _chunks(table: SourceTable, chunk_rows: int, fix_damaged: str,
            on_malformed) -> Iterator[pl.DataFrame]:
    lock = threading.Lock()  # the invalid-row handler may run on reader threads

    def skip(_row) -> str:
        with lock:
            on_malformed()
        return "skip"

    file_columns = list(table.columns.values())
    rename = {v: k for k, v in table.columns.items()}
    read_opts = pacsv.ReadOptions(block_size=BLOCK_BYTES, use_threads=True)
    parse_opts = pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=skip)
    convert_opts = pacsv.ConvertOptions(
        include_columns=file_columns, column_types={c: pa.string() for c in file_columns},
        null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=True,
    )
    compression = "gzip" if table.path.name.endswith(".gz") else None

    def frame(t: pa.Table) -> pl.DataFrame:
        return pl.from_arrow(t).rename(rename)

    pending: list[pa.RecordBatch] = []
    held = 0
    try:
        with pa.input_stream(str(table.path), compression=compression) as stream:
            reader = pacsv.open_csv(stream, read_options=read_opts, parse_options=parse_opts,
                                    convert_options=convert_opts)
            for batch in reader:
                if not batch.num_rows:
                    continue
                pending.append(batch)
                held += batch.num_rows
                while held >= chunk_rows:
                    whole = pa.Table.from_batches(pending, schema=reader.schema)
                    yield frame(whole.slice(0, chunk_rows))
                    rest = whole.slice(chunk_rows)
                    pending, held = rest.to_batches(), rest.num_rows
            if held:
                yield frame(pa.Table.from_batches(pending, schema=reader.schema))
    except (pa.ArrowException, OSError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"cannot read the file ({reason})", where=str(table.path),
                        fix=fix_damaged) from None


class TableReader:
    """Streams source tables into one `ImportSummary` (rows read, malformed rows) and one
    progress display (a task per table, labelled `label_prefix + name`)."""

    def __init__(self, summary: ImportSummary, *, chunk_rows: int, fix_damaged: str,
                 progress: Progress | None = None, label_prefix: str = ""):
        if chunk_rows < 1:
            raise DataError(f"chunk_rows must be positive, got {chunk_rows}", where="convert",
                            fix="pass a chunk size of at least 1 row")
        self.summary = summary
        self.chunk_rows = chunk_rows
        self.fix_damaged = fix_damaged
        self.progress = progress
        self.label_prefix = label_prefix

    def chunks(self, table: SourceTable) -> Iterator[pl.DataFrame]:
        """`table` in frames of `chunk_rows` text columns named as in its spec."""
        name = table.name
        progress = self.progress
        task = progress.add_task(self.label_prefix + name, total=None) if progress else None
        malformed = [0]

        def on_malformed() -> None:
            malformed[0] += 1

        rows = 0
        if not table.empty:
            for chunk in _chunks(table, self.chunk_rows, self.fix_damaged, on_malformed):
                rows += chunk.height
                yield chunk
                if task is not None:
                    progress.advance(task, chunk.height)
        total = rows + malformed[0]
        self.summary.drop_in(name, MALFORMED_ROW, malformed[0])
        self.summary.tables[name] = self.summary.tables.get(name, 0) + total
        self.summary.rows_read += total
        if task is not None:
            done = self.summary.tables[name]
            progress.update(task, total=done, completed=done)

    def read_all(self, table: SourceTable) -> pl.DataFrame:
        frames = list(self.chunks(table))
        if frames:
            return pl.concat(frames)
        return pl.DataFrame(schema={c: pl.String for c in table.columns})


def finish_summary(summary: ImportSummary, dest: Path, rows_given: int) -> None:
    """Count what was actually written, after the writer removed exact duplicates."""
    shards = sorted((dest / S.DATA_DIR).glob("**/*.parquet"))
    summary.events_written = sum(pq.ParquetFile(p).metadata.num_rows for p in shards)
    summary.subjects = pq.ParquetFile(dest / S.SPLITS_FILE).metadata.num_rows
    summary.codes = pq.ParquetFile(dest / S.CODES_FILE).metadata.num_rows
    summary.drop(DUPLICATE_EVENTS, rows_given - summary.events_written)
