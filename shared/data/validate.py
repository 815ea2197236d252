"""Full check of a MEDS dataset on disk: every problem found, each with its fix.

`validate(root)` reads one shard at a time, in record batches, so memory stays
bounded by the batch size plus one set of subject ids and one set of codes
(needed for the checks across shards). It never stops at the first problem:
it returns a list of `Problem`s, errors and warnings, in the order found.

What is an error and what only a warning:

- error: fedehr cannot read the dataset correctly (missing ``data/``, no or
  unreadable shards, missing or mistyped core columns, null ``subject_id`` or
  ``code``, unsorted rows, a subject split over shards or contiguous runs,
  static rows after timed rows, NaN/inf values, splits that contradict the
  shard folders, a malformed ``metadata/`` file, an unsupported
  ``meds_version``).
- warning: the dataset is readable but incomplete or unusual (no
  ``codes.parquet``, ``subject_splits.parquet`` or ``dataset.json``, codes
  without metadata, ``code`` stored as large_string, empty shards, subjects
  not in ascending id order).

MEDS 0.4 is the contract (the `meds` package's schemas); datasets of the 0.3
era are accepted: extra columns are fine and ``text_value`` may be ``string``
or ``large_string``. Row numbers are 0-based row indices within the shard
(as ``pl.read_parquet(shard).row(i)``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

import meds
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from flexible_schema.exceptions import SchemaValidationError
from jsonschema import Draft202012Validator

from fedehr.shared.data import schema as S

Severity = Literal["error", "warning"]

BATCH_ROWS = 1 << 16
EXAMPLES = 3  # ids or codes quoted in a message

SORT_FIX = (
    "sort each shard by subject_id, then time with static rows first, e.g. "
    "pl.read_parquet(f).sort(['subject_id', 'time'], nulls_last=False).write_parquet(f)"
)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset: where, what, and what to do about it."""

    file: str
    location: str | None  # "row 17", "column time", "row 17, column code", or None
    message: str
    fix: str
    severity: Severity = "error"

    def __str__(self) -> str:
        where = f"{self.file} ({self.location})" if self.location else self.file
        return f"{self.severity}: {where}: {self.message}. Fix: {self.fix}"

    def to_dict(self) -> dict:
        return asdict(self)


def errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


def warnings(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "warning"]


def validate(root: str | Path) -> list[Problem]:
    """Check the MEDS dataset at `root`; return every problem found (empty if none)."""
    root = Path(root)
    if not root.is_dir():
        return [Problem(str(root), None, "no such folder",
                        "give the root of a MEDS dataset (it holds data/ and metadata/)")]
    problems: list[Problem] = []
    _check_dataset_json(root, problems)
    splits = _read_splits(root, problems)
    known_codes = _read_codes(root, problems)

    data_dir = root / S.DATA_DIR
    if not data_dir.is_dir():
        problems.append(Problem(str(data_dir), None, f"missing the '{S.DATA_DIR}/' folder",
                                "give the root of a MEDS dataset, or import raw data with "
                                "`fedehr data import`"))
        return problems
    shards = sorted(p for p in data_dir.rglob("*.parquet") if p.is_file())
    if not shards:
        problems.append(Problem(str(data_dir), None, "no parquet shards found",
                                "put the event shards under data/<split>/*.parquet"))
        return problems

    owner: dict[int, Path] = {}  # subject -> first shard it was seen in
    codes_seen: set[str] = set()
    for shard in shards:
        summary = _check_shard(shard, problems)
        if summary is None:
            continue
        subjects, codes = summary
        codes_seen |= codes
        _check_cross_shard(shard, subjects, owner, problems)
        if splits is not None:
            _check_split_folder(root, shard, subjects, splits, problems)

    if splits is not None:
        _check_splits_without_data(root, splits, owner, problems)
    if known_codes is not None:
        _check_code_coverage(root, codes_seen, known_codes, problems)
    return problems


# -- metadata/dataset.json -----------------------------------------------------

def _accepted_version(version: str) -> bool:
    parts = version.strip().lstrip("v").split(".")
    return ".".join(parts[:2]) in S.ACCEPTED_MEDS_VERSIONS


def _check_dataset_json(root: Path, problems: list[Problem]) -> None:
    path = root / S.DATASET_FILE
    if not path.exists():
        problems.append(Problem(str(path), None, "missing (dataset name and MEDS version unknown)",
                                "write metadata/dataset.json with dataset_name and meds_version",
                                "warning"))
        return
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        line = f"line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else None
        problems.append(Problem(str(path), line, f"not valid JSON ({exc})",
                                "repair or regenerate metadata/dataset.json"))
        return
    if not isinstance(meta, dict):
        problems.append(Problem(str(path), None, "is not a JSON object",
                                "write a JSON object with dataset_name and meds_version"))
        return
    validator = Draft202012Validator(meds.DatasetMetadataSchema.schema())
    for err in validator.iter_errors(meta):
        key = ".".join(str(p) for p in err.absolute_path) or None
        problems.append(Problem(str(path), f"key {key}" if key else None, err.message,
                                "follow the MEDS 0.4 DatasetMetadataSchema for this key"))
    created = meta.get("created_at")
    if isinstance(created, str):
        try:
            datetime.fromisoformat(created)
        except ValueError:
            problems.append(Problem(str(path), "key created_at",
                                    f"{created!r} is not an ISO 8601 date-time",
                                    "write created_at as e.g. 2025-01-13T11:02:53", "warning"))
    version = meta.get("meds_version")
    if version is None:
        problems.append(Problem(str(path), "key meds_version", "no meds_version given",
                                f"add \"meds_version\": \"{S.MEDS_VERSION}\" if the data "
                                "follows MEDS 0.4", "warning"))
    elif isinstance(version, str) and not _accepted_version(version):
        accepted = ", ".join(f"{v}.x" for v in S.ACCEPTED_MEDS_VERSIONS)
        problems.append(Problem(str(path), "key meds_version",
                                f"meds_version {version!r} is not supported (accepted: {accepted})",
                                "convert the dataset to MEDS 0.4 (e.g. with MEDS_transforms) "
                                "and update meds_version"))


# -- metadata/subject_splits.parquet --------------------------------------------

def _schema_problems(path: Path, schema: pa.Schema, meds_schema, problems: list[Problem],
                     *, lenient_strings: tuple[str, ...] = ()) -> set[str]:
    """Check `schema` against a `meds` schema class; return the unusable column names."""
    try:
        meds_schema.validate(schema)
        return set()
    except SchemaValidationError as exc:
        bad: set[str] = set()
        for col in exc.missing_req_cols or []:
            bad.add(col)
            problems.append(Problem(str(path), f"column {col}", f"missing required column '{col}'",
                                    f"add a '{col}' column of type {meds_schema.column_type(col)}"))
        for col, want, got in exc.mistyped_cols or []:
            if _string_family(want) and _string_family(got):
                if col not in lenient_strings:
                    problems.append(Problem(
                        str(path), f"column {col}", f"'{col}' is {got}, MEDS 0.4 says {want}",
                        f"cast '{col}' to {want} when writing (readers accept both)", "warning"))
                continue
            bad.add(col)
            problems.append(Problem(str(path), f"column {col}", f"'{col}' is {got}, want {want}",
                                    f"cast '{col}' to {want} when writing the file"))
        for col in exc.disallowed_extra_cols or []:
            problems.append(Problem(str(path), f"column {col}",
                                    f"extra column '{col}' is not part of the MEDS schema",
                                    f"drop '{col}' from this file", "warning"))
        return bad


def _string_family(t) -> bool:
    return isinstance(t, pa.DataType) and (pa.types.is_string(t) or pa.types.is_large_string(t))


def _open_table(path: Path, problems: list[Problem], what: str) -> pa.Table | None:
    try:
        return pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a broken file
        problems.append(Problem(str(path), None, f"not a readable parquet file ({_short(exc)})",
                                f"regenerate {what}"))
        return None


def _read_splits(root: Path, problems: list[Problem]) -> dict[int, str] | None:
    path = root / S.SPLITS_FILE
    if not path.exists():
        problems.append(Problem(str(path), None,
                                "missing; splits are taken from the data/<split>/ folders",
                                "write metadata/subject_splits.parquet (subject_id, split)",
                                "warning"))
        return None
    table = _open_table(path, problems, "metadata/subject_splits.parquet")
    if table is None:
        return None
    if _schema_problems(path, table.schema, meds.SubjectSplitSchema, problems,
                        lenient_strings=("split",)) & {S.SUBJECT_ID, "split"}:
        return None
    fix = "give every subject exactly one split in metadata/subject_splits.parquet"
    ids, names = table.column(S.SUBJECT_ID), table.column("split")
    for col, arr in ((S.SUBJECT_ID, ids), ("split", names)):
        _null_problem(path, col, arr, 0, problems, fix)
    out: dict[int, str] = {}
    conflicts: list[int] = []
    for sid, split in zip(ids.to_pylist(), names.to_pylist(), strict=True):
        if sid is None or split is None:
            continue
        if out.setdefault(sid, split) != split:
            conflicts.append(sid)
    if conflicts:
        problems.append(Problem(str(path), f"column {S.SUBJECT_ID}",
                                f"{len(conflicts)} subject(s) listed in more than one split "
                                f"(e.g. {_examples(conflicts)})", fix))
    return out


# -- metadata/codes.parquet ------------------------------------------------------

def _read_codes(root: Path, problems: list[Problem]) -> set[str] | None:
    path = root / S.CODES_FILE
    if not path.exists():
        problems.append(Problem(str(path), None, "missing; codes have no descriptions",
                                "write metadata/codes.parquet (code, description, parent_codes)",
                                "warning"))
        return None
    table = _open_table(path, problems, "metadata/codes.parquet")
    if table is None:
        return None
    if S.CODE in _schema_problems(path, table.schema, meds.CodeMetadataSchema, problems):
        return None
    codes = table.column(S.CODE)
    _null_problem(path, S.CODE, codes, 0, problems, "drop rows without a code from codes.parquet")
    if pc.count_distinct(codes).as_py() < len(codes) - codes.null_count:
        n = len(codes) - codes.null_count - pc.count_distinct(codes).as_py()
        problems.append(Problem(str(path), f"column {S.CODE}",
                                f"{n} duplicate code row(s); the first description is used",
                                "keep one row per code", "warning"))
    return set(pc.unique(codes).drop_null().to_pylist())


def _check_code_coverage(root: Path, seen: set[str], known: set[str],
                         problems: list[Problem]) -> None:
    missing = sorted(seen - known)
    if missing:
        problems.append(Problem(str(root / S.CODES_FILE), None,
                                f"{len(missing):,} of {len(seen):,} codes in the data have no "
                                f"entry (e.g. {_examples(missing)}); they get no description",
                                "add the missing codes to metadata/codes.parquet", "warning"))


# -- data shards -------------------------------------------------------------------

@dataclass
class _Tally:
    """A count of offending rows and the first one."""

    count: int = 0
    first: int | None = None
    first_subject: int | None = None

    def add(self, mask: np.ndarray, offset: int) -> None:
        """Count the rows flagged in `mask`, a batch whose first row is `offset`."""
        n = int(mask.sum())
        if n:
            if self.first is None:
                self.first = offset + int(np.argmax(mask))
            self.count += n


@dataclass
class _ShardState:
    nulls: dict[str, _Tally] = field(default_factory=dict)
    nan: _Tally = field(default_factory=_Tally)
    inf: _Tally = field(default_factory=_Tally)
    time_order: _Tally = field(default_factory=_Tally)
    static_after: _Tally = field(default_factory=_Tally)
    split_runs: _Tally = field(default_factory=_Tally)  # a subject's rows not contiguous
    descending: _Tally = field(default_factory=_Tally)  # next subject has a smaller id
    subjects: set[int] = field(default_factory=set)
    codes: set[str] = field(default_factory=set)
    prev_sid: int | None = None
    prev_time: int | None = None  # None: static row (null time) or no previous row


def _check_shard(path: Path, problems: list[Problem]) -> tuple[set[int], set[str]] | None:
    """Stream one shard; append its problems; return its subjects and codes (None if unreadable)."""
    try:
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
    except Exception as exc:
        problems.append(Problem(str(path), None, f"not a readable parquet file ({_short(exc)})",
                                "re-export this shard, or remove it if it is a stray file"))
        return None
    # Mistyped columns are reported here; the row checks below use what is readable.
    _schema_problems(path, schema, meds.DataSchema, problems,
                           lenient_strings=(S.TEXT_VALUE,))
    usable = {
        S.SUBJECT_ID: lambda t: pa.types.is_integer(t),
        S.TIME: lambda t: pa.types.is_timestamp(t) or pa.types.is_date(t),
        S.CODE: _string_family,
        S.NUMERIC_VALUE: lambda t: pa.types.is_floating(t),
    }
    cols = [c for c, ok in usable.items() if c in schema.names and ok(schema.field(c).type)]
    if pf.metadata.num_rows == 0:
        problems.append(Problem(str(path), None, "shard has no rows",
                                "remove the empty shard", "warning"))
        return set(), set()

    state = _ShardState()
    offset = 0
    try:
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=cols):
            _check_batch(batch, offset, state)
            offset += batch.num_rows
    except Exception as exc:
        problems.append(Problem(str(path), f"row {offset}",
                                f"unreadable after row {offset} ({_short(exc)})",
                                "re-export this shard; the file is damaged"))
    _report_shard(path, state, problems)
    return state.subjects, state.codes


def _check_batch(batch: pa.RecordBatch, offset: int, st: _ShardState) -> None:
    names = batch.schema.names
    for col in (S.SUBJECT_ID, S.CODE):
        if col in names:
            arr = batch.column(col)
            if arr.null_count:
                st.nulls.setdefault(col, _Tally()).add(_np_bool(arr.is_null()), offset)
    if S.CODE in names:
        st.codes.update(pc.unique(batch.column(S.CODE)).drop_null().to_pylist())
    if S.NUMERIC_VALUE in names:
        values = batch.column(S.NUMERIC_VALUE)
        st.nan.add(_np_bool(pc.is_nan(values)), offset)
        st.inf.add(_np_bool(pc.is_inf(values)), offset)
    if S.SUBJECT_ID in names:
        _check_order(batch, offset, st)


def _check_order(batch: pa.RecordBatch, offset: int, st: _ShardState) -> None:
    sid_arr = batch.column(S.SUBJECT_ID)
    sid_valid = _np_bool(sid_arr.is_valid())
    sid = sid_arr.cast(pa.int64()).fill_null(0).to_numpy()
    if S.TIME in batch.schema.names:
        t_arr = batch.column(S.TIME).cast(pa.timestamp("us"))
        t_valid = _np_bool(t_arr.is_valid())
        t = t_arr.cast(pa.int64()).fill_null(0).to_numpy()
    else:
        t_valid = np.zeros(len(sid), dtype=bool)
        t = np.zeros(len(sid), dtype=np.int64)
    # Rows with a null subject_id are reported on their own and skipped here.
    keep = np.flatnonzero(sid_valid)
    if not len(keep):
        return
    rows, sid, t, t_valid = keep + offset, sid[keep], t[keep], t_valid[keep]
    # Prepend the last row of the previous batch so pairs span batch borders.
    has_prev = st.prev_sid is not None
    if has_prev:
        sid_p = np.concatenate(([st.prev_sid], sid))
        t_p = np.concatenate(([st.prev_time or 0], t))
        tv_p = np.concatenate(([st.prev_time is not None], t_valid))
    else:
        sid_p, t_p, tv_p = sid, t, t_valid
    same = sid_p[1:] == sid_p[:-1]
    pair_rows = rows if has_prev else rows[1:]
    pair_sids = sid if has_prev else sid[1:]
    back_in_time = same & tv_p[1:] & tv_p[:-1] & (t_p[1:] < t_p[:-1])
    static_after = same & tv_p[:-1] & ~tv_p[1:]
    _hits(st.time_order, back_in_time, pair_rows, pair_sids)
    _hits(st.static_after, static_after, pair_rows, pair_sids)
    # Runs of one subject: each run start must be a subject not seen before.
    # same[j] compares sid_p[j + 1] with sid_p[j]; map it back to an index into sid.
    starts = np.flatnonzero(~same) if has_prev else np.flatnonzero(~same) + 1
    if not has_prev:
        starts = np.concatenate(([0], starts))
    for i in starts:
        s = int(sid[i])
        prev = st.prev_sid if i == 0 else int(sid[i - 1])
        if s in st.subjects:
            _note(st.split_runs, int(rows[i]), s)
        elif prev is not None and s < prev:
            _note(st.descending, int(rows[i]), s)
        st.subjects.add(s)
    st.prev_sid = int(sid[-1])
    st.prev_time = int(t[-1]) if t_valid[-1] else None


def _hits(tally: _Tally, mask: np.ndarray, rows: np.ndarray, sids: np.ndarray) -> None:
    """Count the rows flagged in `mask`; remember the first (row number and subject)."""
    n = int(mask.sum())
    if n:
        if tally.first is None:
            i = int(np.argmax(mask))
            tally.first, tally.first_subject = int(rows[i]), int(sids[i])
        tally.count += n


def _note(tally: _Tally, row: int, subject: int) -> None:
    tally.count += 1
    if tally.first is None:
        tally.first, tally.first_subject = row, subject


def _report_shard(path: Path, st: _ShardState, problems: list[Problem]) -> None:
    f = str(path)
    for col, tally in st.nulls.items():
        problems.append(Problem(f, f"row {tally.first}, column {col}",
                                f"{tally.count:,} row(s) with a null {col}, first at row "
                                f"{tally.first}",
                                f"drop those rows or fill in {col} in the ETL"))
    for tally, what in ((st.nan, "NaN"), (st.inf, "infinite")):
        if tally.count:
            problems.append(Problem(f, f"row {tally.first}, column {S.NUMERIC_VALUE}",
                                    f"{tally.count:,} {what} numeric_value(s), first at row "
                                    f"{tally.first}",
                                    "write null instead of NaN/inf for a missing or invalid value"))
    if st.split_runs.count:
        t = st.split_runs
        problems.append(Problem(f, f"row {t.first}",
                                f"rows are not sorted by (subject_id, time): {t.count:,} subject "
                                f"run(s) resume after another subject, first subject "
                                f"{t.first_subject} at row {t.first}", SORT_FIX))
    if st.time_order.count:
        t = st.time_order
        problems.append(Problem(f, f"row {t.first}, column {S.TIME}",
                                f"rows are not sorted by (subject_id, time): {t.count:,} row(s) "
                                f"earlier than the row before, first at row {t.first} "
                                f"(subject {t.first_subject})", SORT_FIX))
    if st.static_after.count:
        t = st.static_after
        problems.append(Problem(f, f"row {t.first}, column {S.TIME}",
                                f"{t.count:,} static row(s) (null time) after timed rows of the "
                                f"same subject, first at row {t.first} (subject {t.first_subject})",
                                SORT_FIX))
    if st.descending.count:
        t = st.descending
        problems.append(Problem(f, f"row {t.first}, column {S.SUBJECT_ID}",
                                f"subjects are not in ascending subject_id order ({t.count:,} "
                                f"step(s) down, first at row {t.first})", SORT_FIX, "warning"))


# -- across shards -------------------------------------------------------------------

def _check_cross_shard(shard: Path, subjects: set[int], owner: dict[int, Path],
                       problems: list[Problem]) -> None:
    clashes: dict[Path, list[int]] = {}
    for s in subjects:
        first = owner.setdefault(s, shard)
        if first != shard:
            clashes.setdefault(first, []).append(s)
    for other, ids in clashes.items():
        problems.append(Problem(str(shard), f"column {S.SUBJECT_ID}",
                                f"{len(ids):,} subject(s) also in {other} (e.g. "
                                f"{_examples(sorted(ids))}); a subject must sit in one shard",
                                "re-shard so that all rows of a subject are in one file"))


def _shard_folder(root: Path, shard: Path) -> str | None:
    parts = shard.relative_to(root / S.DATA_DIR).parts
    return parts[0] if len(parts) > 1 else None


def _check_split_folder(root: Path, shard: Path, subjects: set[int], splits: dict[int, str],
                        problems: list[Problem]) -> None:
    folder = _shard_folder(root, shard)
    names = set(splits.values()) | set(S.SPLITS)
    unlisted = sorted(s for s in subjects if s not in splits)
    if unlisted:
        problems.append(Problem(str(shard), f"column {S.SUBJECT_ID}",
                                f"{len(unlisted):,} subject(s) missing from {S.SPLITS_FILE} "
                                f"(e.g. {_examples(unlisted)})",
                                f"add them to {S.SPLITS_FILE} or regenerate it"))
    if folder is None or folder not in names:
        return
    wrong = sorted(s for s in subjects if s in splits and splits[s] != folder)
    if wrong:
        other = sorted({splits[s] for s in wrong})
        problems.append(Problem(str(shard), f"column {S.SUBJECT_ID}",
                                f"{len(wrong):,} subject(s) in the '{folder}' folder are listed "
                                f"as {', '.join(other)} in {S.SPLITS_FILE} "
                                f"(e.g. {_examples(wrong)})",
                                f"move the shard rows or fix {S.SPLITS_FILE} so that they agree"))


def _check_splits_without_data(root: Path, splits: dict[int, str], owner: dict[int, Path],
                               problems: list[Problem]) -> None:
    orphans = sorted(s for s in splits if s not in owner)
    if orphans:
        problems.append(Problem(str(root / S.SPLITS_FILE), f"column {S.SUBJECT_ID}",
                                f"{len(orphans):,} subject(s) have a split but no events "
                                f"(e.g. {_examples(orphans)})",
                                f"drop them from {S.SPLITS_FILE}", "warning"))


# -- small helpers ---------------------------------------------------------------------

def _null_problem(path: Path, col: str, arr, offset: int, problems: list[Problem],
                  fix: str) -> None:
    if arr.null_count:
        mask = _np_bool(pc.is_null(arr))
        first = offset + int(np.argmax(mask))
        problems.append(Problem(str(path), f"row {first}, column {col}",
                                f"{arr.null_count:,} row(s) with a null {col}, first at row "
                                f"{first}", fix))


def _np_bool(arr) -> np.ndarray:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr.fill_null(False).to_numpy(zero_copy_only=False).astype(bool, copy=False)


def _examples(items) -> str:
    items = list(items)
    shown = ", ".join(repr(x) if isinstance(x, str) else str(x) for x in items[:EXAMPLES])
    return shown + (", ..." if len(items) > EXAMPLES else "")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) < 160 else text[:157] + "..."


__all__ = ["Problem", "Severity", "errors", "validate", "warnings"]
