"""The MEDS writer sorts one bucket of subjects at a time (bounded memory): its output is
what the writer wrote before buckets, byte for byte, however the shards are cut."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from fedehr.shared.data import schema as S
from fedehr.shared.data import writer as W
from fedehr.shared.data.etl import mimic_iv, omop, synthea
from fedehr.shared.data.synth.hospitals import synthesize
from tests.fixtures.mimic_iv_fixture import write_mimic_iv_fixture
from tests.fixtures.omop_fixture import write_omop_fixture
from tests.fixtures.synthea_fixture import write_synthea_fixture

# sha256[:16] of every parquet file the writer produced on these inputs before it sorted
# by bucket (commit bb2d764, whole-shard sort with polars' streaming engine). mimic-iv's
# codes changed since (issue 19: chart events LAB//, MEDICATION//START//, PROCEDURE//START//,
# infusion RxNorm parents); its pins are the new output, the same at both bucket sizes.
BEFORE_BUCKETS = {
    "mimic-iv": {
        "data/held_out/0.parquet": "64565571202de629",
        "data/train/0.parquet": "e3bf32d20af812c0",
        "data/tuning/0.parquet": "06f76a1df3a76bf2",
        "metadata/codes.parquet": "04cc7fc5eed930c8",
        "metadata/subject_splits.parquet": "1eb83867f77177f5",
    },
    "synthea": {
        "data/held_out/0.parquet": "3b7780f112d14e99",
        "data/train/0.parquet": "e440bcb0803ad7af",
        "metadata/codes.parquet": "d35d27d4194bf739",
        "metadata/subject_splits.parquet": "b6c2fb5694a8e83f",
    },
    "omop": {
        "data/train/0.parquet": "4042871e6d837b7c",
        "metadata/codes.parquet": "d24d284dede723d4",
        "metadata/subject_splits.parquet": "d665d5c10b55e8e5",
    },
    "synth": {
        "hospital_a/data/held_out/0.parquet": "43efd9f766a3ae76",
        "hospital_a/data/train/0.parquet": "03a57e64ddf62247",
        "hospital_a/data/tuning/0.parquet": "963e57236a1a9781",
        "hospital_a/images/embeddings.parquet": "9b633a96a3c79371",
        "hospital_a/metadata/codes.parquet": "3a266c678c27203b",
        "hospital_a/metadata/subject_splits.parquet": "985c845a3dcef8bd",
    },
}


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()[:16]
            for p in sorted(root.rglob("*.parquet"))}


def _import(source: str, tmp: Path) -> Path:
    if source == "mimic-iv":
        fixture = write_mimic_iv_fixture(tmp / "src", extra_subjects=30, labs_per_subject=7)
        mimic_iv.convert(fixture.root, tmp / "out", chunk_rows=50)
    elif source == "synthea":
        write_synthea_fixture(tmp / "src")
        synthea.convert(tmp / "src", tmp / "out")
    elif source == "omop":
        write_omop_fixture(tmp / "src")
        omop.convert(tmp / "src", tmp / "out")
    else:
        synthesize(tmp / "out", sites=1, patients=60, seed=3)
    return tmp / "out"


@pytest.mark.parametrize("bucket_rows", [W.BUCKET_ROWS, 3])
@pytest.mark.parametrize("source", list(BEFORE_BUCKETS))
def test_fixture_imports_are_byte_for_byte_what_they_were(source, bucket_rows, tmp_path,
                                                          monkeypatch):
    monkeypatch.setattr(W, "BUCKET_ROWS", bucket_rows)  # 3: about one subject per bucket
    assert _hashes(_import(source, tmp_path)) == BEFORE_BUCKETS[source]


def _events_with_ties(n: int = 3000, seed: int = 0) -> pl.DataFrame:
    """Random order, 40 subjects, exact duplicates, null times, NaN, and events that tie on
    (subject, time, code) but differ in value."""
    rng = np.random.default_rng(seed)
    code = pl.Series([f"C//{c}" for c in rng.integers(0, 12, n)])
    df = pl.DataFrame({
        S.SUBJECT_ID: rng.integers(1, 41, n),
        S.TIME: pl.Series(rng.integers(0, 50, n) * 3_600_000_000).cast(pl.Datetime("us")),
        S.CODE: code,
        S.NUMERIC_VALUE: rng.normal(size=n).astype("float32"),
        S.TEXT_VALUE: pl.Series([None, "a", "b"])[rng.integers(0, 3, n)],
    }).with_columns(pl.when(code != "C//0").then(pl.col(S.TIME)).alias(S.TIME),
                    pl.when(code != "C//1").then(pl.col(S.NUMERIC_VALUE))
                    .otherwise(float("nan")).alias(S.NUMERIC_VALUE))
    return pl.concat([df, df.head(200)])


def _write(dest: Path, events: pl.DataFrame, bucket_rows: int) -> Path:
    with W.MEDSWriter(dest, dataset_name="t", etl_name="t", subjects_per_shard=6) as writer:
        writer.bucket_rows = bucket_rows
        for part in events.iter_slices(700):
            writer.add_events(part)
    return dest


def test_bucket_cuts_do_not_change_a_byte_and_ties_sort_one_way(tmp_path, monkeypatch):
    monkeypatch.setattr(W, "ROW_GROUP_ROWS", 100)  # row groups that straddle buckets
    events = _events_with_ties()
    whole = _hashes(_write(tmp_path / "whole", events, bucket_rows=10**9))
    cut = _write(tmp_path / "cut", events, bucket_rows=50)
    assert _hashes(cut) == whole
    shard = pq.ParquetFile(cut / S.DATA_DIR / "train" / "0.parquet")
    assert shard.metadata.num_row_groups > 1
    assert all(shard.metadata.row_group(i).num_rows == 100
               for i in range(shard.metadata.num_row_groups - 1))
    written = pl.read_parquet(cut / S.DATA_DIR / "*" / "*.parquet")
    expected = events.unique().sort(W.SORT_KEYS, nulls_last=False)
    assert written.sort(W.SORT_KEYS, nulls_last=False).equals(expected)
    for path in (cut / S.DATA_DIR).rglob("*.parquet"):
        frame = pl.read_parquet(path)
        assert frame.equals(frame.sort(W.SORT_KEYS, nulls_last=False))


def test_buckets_hold_whole_subjects_and_at_most_bucket_rows():
    rows = {1: 4, 2: 4, 3: 9, 4: 1, 5: 1}
    assert W._cut_buckets([1, 2, 3, 4, 5], rows, bucket_rows=8) == [[1, 2], [3], [4, 5]]


def test_a_failure_while_sorting_leaves_no_dataset_and_no_spill(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(W, "_write_sorted_shard", fail)
    with pytest.raises(OSError, match="disk full"):
        _write(tmp_path / "meds", _events_with_ties(300), bucket_rows=50)
    assert list(tmp_path.iterdir()) == []
