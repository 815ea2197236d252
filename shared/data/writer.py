"""Writes a MEDS dataset from event chunks, atomically and with bounded memory.

ETLs and the synthetic-hospital generator hand event chunks (any order) to a
`MEDSWriter`; it spills each chunk to a staging parquet file, and `finish()`
assigns subjects to train/tuning/held_out, writes one sorted shard per split
(per `subjects_per_shard` subjects) with polars' streaming engine, then the
metadata files, and renames the finished folder into place. If anything fails
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
        self._chunks = 0
        self.rows_written = 0
        self._codes: dict[str, tuple[str | None, list[str] | None]] = {}

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
        pq.write_table(table, self.root / "_staging" / f"{self._chunks:06d}.parquet")
        self._chunks += 1
        self.rows_written += table.num_rows

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
        events = pl.scan_parquet(str(staging / "*.parquet")) if self._chunks else None
        subject_ids = (
            events.select(pl.col(S.SUBJECT_ID).unique()).collect()[S.SUBJECT_ID].to_list()
            if events is not None else []
        )
        splits = assign_splits(subject_ids, self.seed)
        (self.root / "metadata").mkdir(exist_ok=True)
        split_table = pa.table(
            {S.SUBJECT_ID: list(splits), "split": list(splits.values())}, schema=S.SPLITS_SCHEMA
        )
        pq.write_table(split_table, self.root / S.SPLITS_FILE)
        if events is not None:
            self._write_shards(events, splits)
        self._write_codes(events)
        self._write_dataset_json()
        shutil.rmtree(staging)

    def _write_shards(self, events: pl.LazyFrame, splits: dict[int, str]) -> None:
        by_split: dict[str, list[int]] = {}
        for sid, split in splits.items():
            by_split.setdefault(split, []).append(sid)
        for split, ids in by_split.items():
            ids.sort()
            for shard, start in enumerate(range(0, len(ids), self.subjects_per_shard)):
                chunk = ids[start : start + self.subjects_per_shard]
                out = self.root / S.DATA_DIR / split / f"{shard}.parquet"
                out.parent.mkdir(parents=True, exist_ok=True)
                frame = (
                    events.filter(pl.col(S.SUBJECT_ID).is_in(chunk))
                    .unique(maintain_order=False)
                    .sort([S.SUBJECT_ID, S.TIME, S.CODE], nulls_last=False)
                    .collect(engine="streaming")
                )
                pq.write_table(frame.to_arrow().cast(S.DATA_SCHEMA, safe=False), out)

    def _write_codes(self, events: pl.LazyFrame | None) -> None:
        seen = set()
        if events is not None:
            seen = set(events.select(pl.col(S.CODE).unique()).collect()[S.CODE].to_list())
        codes = sorted(seen | set(self._codes))
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
