"""Writes a MEDS dataset from event chunks, atomically and with bounded memory.

ETLs and the synthetic-hospital generator hand event chunks (any order) to a
`MEDSWriter`; it spills each chunk to a staging Arrow file and counts rows per
subject. `finish()` assigns subjects to train/tuning/held_out and to shards (per
`subjects_per_shard` subjects), cuts each shard into buckets of whole subjects of at
most `bucket_rows` rows, moves the staged events into one spill file per bucket
(one pass, a chunk at a time), then sorts one bucket at a time into its shard. Peak
memory is a bucket plus a chunk, whatever the size of the input; a shard's file is the
same, byte for byte, as sorting the whole shard at once would write. Then come the
metadata files, and the finished folder is renamed into place. If anything fails
the destination is left as it was.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from fedehr.shared import __version__
from fedehr.shared.atomic import staged_directory
from fedehr.shared.data import schema as S

DEFAULT_SPLIT_FRACTIONS = {S.TRAIN: 0.8, S.TUNING: 0.1, S.HELD_OUT: 0.1}


def to_meds_table(df: pl.DataFrame | pa.Table) -> pa.Table:
    """Cast an event frame to the MEDS core schema (missing optional columns become null)."""
    if isinstance(df, pa.Table):
        df = pl.from_arrow(df)
    cols = []
    for field in S.DATA_SCHEMA:
        if field.name in df.columns:
            cols.append(pl.col(field.name))
        else:
            cols.append(pl.lit(None).alias(field.name))
    table = df.select(cols).to_arrow()
    return table.cast(S.DATA_SCHEMA, safe=False) if table.num_rows else S.DATA_SCHEMA.empty_table()


def assign_splits(
    subject_ids: Iterable[int], seed: int, fractions: dict[str, float] | None = None
) -> dict[int, str]:
    """Deterministic split assignment: shuffle sorted ids with `seed`, cut by fractions."""
    fractions = fractions or DEFAULT_SPLIT_FRACTIONS
    ids = np.array(sorted(set(int(s) for s in subject_ids)), dtype=np.int64)
    rng = np.random.default_rng(seed)
    rng.shuffle(ids)
    out: dict[int, str] = {}
    start = 0
    names = list(fractions)
    for i, name in enumerate(names):
        stop = len(ids) if i == len(names) - 1 else start + int(round(fractions[name] * len(ids)))
        for sid in ids[start:stop]:
            out[int(sid)] = name
        start = stop
    return out


DATASET_KIND = "MEDS dataset"  # the marker an --overwrite recognises
BUCKET_ROWS = 2_000_000  # rows sorted in memory at once (import peak RSS ~1.3 GB, see
# benchmarks/results/import_scale.txt)
MAX_BUCKETS = 1_000  # spill files open at once; beyond it buckets grow instead
ROW_GROUP_ROWS = 1024 * 1024  # pyarrow's default, so that a shard's bytes do not depend
# on how it was cut into buckets
SORT_KEYS = [S.SUBJECT_ID, S.TIME, S.CODE, S.NUMERIC_VALUE, S.TEXT_VALUE]  # every column:
# events that tie on subject, time and code still come out in one order, run after run
_SPILL_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")  # staging files: fast, and smaller


class MEDSWriter:
    """Collects event chunks and code metadata, then writes a complete MEDS dataset."""

    def __init__(
        self,
        dest: str | Path,
        *,
        dataset_name: str,
        etl_name: str,
        dataset_version: str = "1.0",
        seed: int = 0,
        subjects_per_shard: int = 10_000,
        overwrite: bool = False,
        extra_metadata: dict | None = None,
        inputs: tuple[Path, ...] = (),
    ):
        self.dest = Path(dest)
        self.dataset_name = dataset_name
        self.etl_name = etl_name
        self.dataset_version = dataset_version
        self.seed = seed
        self.subjects_per_shard = subjects_per_shard
        self.extra_metadata = extra_metadata or {}
        self._stage = staged_directory(self.dest, overwrite=overwrite, kind=DATASET_KIND,
                                       inputs=inputs)
        self.root: Path | None = None
        self.bucket_rows = BUCKET_ROWS
        self._chunks = 0
        self.rows_written = 0
        self._codes: dict[str, tuple[str | None, list[str] | None]] = {}
        self._seen_codes: set[str] = set()
        self._subject_rows: list[pl.DataFrame] = []  # (subject_id, rows) per chunk, merged

    # The writer is a context manager so that a failure removes the staging folder.
    def __enter__(self) -> MEDSWriter:
        self.root = self._stage.__enter__()
        (self.root / "_staging").mkdir()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool | None:
        if exc_type is None:
            self._finish()
        return self._stage.__exit__(exc_type, exc, tb)

    def add_events(self, df: pl.DataFrame | pa.Table) -> None:
        table = to_meds_table(df)
        if table.num_rows == 0:
            return
        _write_arrow(self.root / "_staging" / f"{self._chunks:06d}.arrow", table)
        self._chunks += 1
        self.rows_written += table.num_rows
        frame = pl.from_arrow(table)
        self._seen_codes.update(frame[S.CODE].unique().to_list())
        self._subject_rows.append(frame.group_by(S.SUBJECT_ID).len("rows"))
        if len(self._subject_rows) > 64:
            self._subject_rows = [self._rows_per_subject()]

    def _rows_per_subject(self) -> pl.DataFrame:
        """subject_id -> rows staged (exact duplicates included), sorted by subject_id."""
        if not self._subject_rows:
            return pl.DataFrame(schema={S.SUBJECT_ID: pl.Int64, "rows": pl.UInt32})
        return (pl.concat(self._subject_rows).group_by(S.SUBJECT_ID)
                .agg(pl.col("rows").sum()).sort(S.SUBJECT_ID))

    def add_codes(
        self, codes: Iterable[str], descriptions: Iterable[str | None] | None = None,
        parents: Iterable[list[str] | None] | None = None,
    ) -> None:
        """Record code metadata; the first description given for a code wins."""
        codes = list(codes)
        descriptions = list(descriptions) if descriptions is not None else [None] * len(codes)
        parents = list(parents) if parents is not None else [None] * len(codes)
        for code, desc, par in zip(codes, descriptions, parents, strict=True):
            old = self._codes.get(code)
            if old is None or (old[0] is None and desc) or (old[1] is None and par):
                self._codes[code] = (desc or (old[0] if old else None),
                                     par or (old[1] if old else None))

    def add_sidecar(self, relpath: str, table: pa.Table) -> None:
        """Extra files that events refer to (e.g. image embeddings), stored under the root."""
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)

    def _finish(self) -> None:
        staging = self.root / "_staging"
        subject_rows = self._rows_per_subject()
        splits = assign_splits(subject_rows[S.SUBJECT_ID].to_list(), self.seed)
        (self.root / "metadata").mkdir(exist_ok=True)
        split_table = pa.table(
            {S.SUBJECT_ID: list(splits), "split": list(splits.values())}, schema=S.SPLITS_SCHEMA
        )
        pq.write_table(split_table, self.root / S.SPLITS_FILE)
        if self._chunks:
            self._write_shards(staging, splits, dict(subject_rows.iter_rows()))
        self._write_codes()
        self._write_dataset_json()
        shutil.rmtree(staging)

    def _write_shards(self, staging: Path, splits: dict[int, str],
                      rows: dict[int, int]) -> None:
        shards = self._plan_shards(splits)
        bucket_rows = max(self.bucket_rows, -(-self.rows_written // MAX_BUCKETS))
        buckets = [_cut_buckets(ids, rows, bucket_rows) for _, ids in shards]
        subjects = np.array([s for shard in buckets for bucket in shard for s in bucket],
                            dtype=np.int64)
        bucket_of = np.array([b for b, bucket in enumerate(x for shard in buckets for x in shard)
                              for _ in bucket], dtype=np.int64)
        order = np.argsort(subjects)
        spill = self.root / "_buckets"
        spill.mkdir()
        _spill_by_bucket(sorted(staging.glob("*.arrow")), subjects[order], bucket_of[order],
                         spill)
        first = 0
        for (out, _), shard in zip(shards, buckets, strict=True):
            out.parent.mkdir(parents=True, exist_ok=True)
            _write_sorted_shard(out, [spill / f"{b}.arrow"
                                      for b in range(first, first + len(shard))])
            first += len(shard)
        shutil.rmtree(spill)

    def _plan_shards(self, splits: dict[int, str]) -> list[tuple[Path, list[int]]]:
        """(shard file, its sorted subject ids): `subjects_per_shard` sorted ids per shard."""
        by_split: dict[str, list[int]] = {}
        for sid, split in splits.items():
            by_split.setdefault(split, []).append(sid)
        shards = []
        for split, ids in by_split.items():
            ids.sort()
            for shard, start in enumerate(range(0, len(ids), self.subjects_per_shard)):
                out = self.root / S.DATA_DIR / split / f"{shard}.parquet"
                shards.append((out, ids[start : start + self.subjects_per_shard]))
        return shards

    def _write_codes(self) -> None:
        codes = sorted(self._seen_codes | set(self._codes))
        table = pa.table(
            {
                "code": codes,
                "description": [self._codes.get(c, (None, None))[0] for c in codes],
                "parent_codes": [self._codes.get(c, (None, None))[1] for c in codes],
            },
            schema=S.CODES_SCHEMA,
        )
        pq.write_table(table, self.root / S.CODES_FILE)

    def _write_dataset_json(self) -> None:
        meta = {
            "dataset_name": self.dataset_name,
            "dataset_version": self.dataset_version,
            "etl_name": self.etl_name,
            "etl_version": __version__,
            "meds_version": S.MEDS_VERSION,
            "created_at": datetime.now(UTC).isoformat(),
            **self.extra_metadata,
        }
        (self.root / S.DATASET_FILE).write_text(json.dumps(meta, indent=2))


def _cut_buckets(ids: list[int], rows: dict[int, int], bucket_rows: int) -> list[list[int]]:
    """Runs of consecutive sorted `ids` holding at most `bucket_rows` rows (one subject
    with more rows is a bucket of its own)."""
    buckets: list[list[int]] = [[]]
    filled = 0
    for sid in ids:
        if buckets[-1] and filled + rows[sid] > bucket_rows:
            buckets.append([])
            filled = 0
        buckets[-1].append(sid)
        filled += rows[sid]
    return buckets


def _spill_by_bucket(chunks: list[Path], subjects: np.ndarray, bucket_of: np.ndarray,
                     spill: Path) -> None:
    """Move staged events into one Arrow stream file per bucket, a chunk at a time
    (`bucket_of[i]` is the bucket of `subjects[i]`, sorted); each chunk is deleted once
    moved, so the disk holds the events about once."""
    writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
    try:
        for chunk in chunks:
            with pa.OSFile(str(chunk)) as source:
                table = pa.ipc.open_stream(source).read_all()
            buckets = bucket_of[np.searchsorted(subjects, table[S.SUBJECT_ID].to_numpy())]
            order = np.argsort(buckets, kind="stable")
            table, buckets = table.take(order), buckets[order]
            starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
            for start, stop in zip(starts, [*starts[1:], len(buckets)], strict=True):
                bucket = int(buckets[start])
                if bucket not in writers:
                    writers[bucket] = pa.ipc.new_stream(spill / f"{bucket}.arrow", S.DATA_SCHEMA,
                                                        options=_SPILL_OPTIONS)
                writers[bucket].write_table(table.slice(start, stop - start))
            chunk.unlink()
    finally:
        for writer in writers.values():
            writer.close()


def _write_arrow(path: Path, table: pa.Table) -> None:
    with pa.ipc.new_stream(path, table.schema, options=_SPILL_OPTIONS) as writer:
        writer.write_table(table)


def _read_arrow(path: Path) -> pl.DataFrame:
    with pa.OSFile(str(path)) as source:
        return pl.from_arrow(pa.ipc.open_stream(source).read_all())


def _distinct_sorted(events: pl.DataFrame) -> pl.DataFrame:
    """`events` sorted by every column, exact duplicates dropped: after the sort they are
    neighbours (cheaper than hashing whole rows). NaN equals NaN, as in `unique()`."""
    events = events.sort(SORT_KEYS, nulls_last=False)
    differs = pl.int_range(pl.len()) == 0
    for name in SORT_KEYS:
        column, before = pl.col(name), pl.col(name).shift(1)
        changed = column.ne_missing(before)
        if events.schema[name].is_float():
            changed = changed & ~(column.is_nan() & before.is_nan()).fill_null(False)
        differs = differs | changed
    return events.filter(differs)


def _write_sorted_shard(out: Path, buckets: list[Path]) -> None:
    """Sort each bucket (distinct events by `SORT_KEYS`) and append it to `out` in row
    groups of `ROW_GROUP_ROWS`, exactly as one `pq.write_table` of the whole shard."""
    pending: list[pa.Table] = []
    with pq.ParquetWriter(out, S.DATA_SCHEMA) as writer:
        for bucket in buckets:
            events = _read_arrow(bucket)
            bucket.unlink()
            frame = _distinct_sorted(events)
            pending.append(frame.to_arrow().cast(S.DATA_SCHEMA, safe=False))
            del events, frame
            pending = _write_full_row_groups(writer, pending)
        if pending:
            writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)


def _write_full_row_groups(writer: pq.ParquetWriter, pending: list[pa.Table]) -> list[pa.Table]:
    """Write the whole row groups `pending` holds; return the rest, still pending."""
    rows = sum(t.num_rows for t in pending)
    if rows < ROW_GROUP_ROWS:
        return pending
    table = pa.concat_tables(pending)
    full = rows - rows % ROW_GROUP_ROWS
    writer.write_table(table.slice(0, full), row_group_size=ROW_GROUP_ROWS)
    rest = table.slice(full)
    return [rest] if rest.num_rows else []
