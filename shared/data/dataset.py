"""Read access to a MEDS dataset on disk.

`MEDSDataset(root)` knows the layout (data shards per split, codes, splits,
dataset.json) and hands out polars lazy frames, so callers stream instead of
loading a whole dataset. It checks only what it needs to open the dataset;
`fedehr.shared.data.validate` does the full check.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from fedehr.shared.data import schema as S
from fedehr.shared.errors import DataError


@dataclass(frozen=True)
class MEDSDataset:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def open(cls, root: str | Path) -> MEDSDataset:
        root = Path(root)
        if not root.is_dir():
            raise DataError("no such folder", where=str(root),
                            fix="give the root of a MEDS dataset (it holds data/ and metadata/)")
        if not (root / S.DATA_DIR).is_dir():
            raise DataError(f"missing the '{S.DATA_DIR}/' folder", where=str(root),
                            fix="give the root of a MEDS dataset, or import raw data with "
                                "`fedehr data import`")
        return cls(root)

    # -- layout -------------------------------------------------------------
    def shard_paths(self, split: str | None = None) -> list[Path]:
        base = self.root / S.DATA_DIR
        pattern = f"{split}/**/*.parquet" if split else "**/*.parquet"
        return sorted(p for p in base.glob(pattern) if p.is_file())

    def splits_present(self) -> list[str]:
        base = self.root / S.DATA_DIR
        return sorted(p.name for p in base.iterdir() if p.is_dir())

    # -- tables ---------------------------------------------------------------
    def scan(self, split: str | None = None) -> pl.LazyFrame:
        """All events (optionally of one split) as a lazy frame of the MEDS core columns."""
        paths = self.shard_paths(split)
        if not paths:
            where = self.root / S.DATA_DIR / (split or "")
            raise DataError("no parquet shards found", where=str(where),
                            fix="check the dataset path and split name")
        # diagonal_relaxed: shards written by other ETLs may lack optional columns or
        # use string instead of large_string; this unifies them.
        frame = pl.concat([pl.scan_parquet(str(p)) for p in paths], how="diagonal_relaxed")
        for col, dtype in ((S.NUMERIC_VALUE, pl.Float32), (S.TEXT_VALUE, pl.String)):
            if col not in frame.collect_schema().names():
                frame = frame.with_columns(pl.lit(None, dtype=dtype).alias(col))
        return frame.select(S.SUBJECT_ID, S.TIME, S.CODE, S.NUMERIC_VALUE, S.TEXT_VALUE)

    def codes(self) -> pl.DataFrame:
        path = self.root / S.CODES_FILE
        if not path.exists():
            return pl.DataFrame(schema={"code": pl.String, "description": pl.String,
                                        "parent_codes": pl.List(pl.String)})
        return pl.read_parquet(path)

    def subject_splits(self) -> pl.DataFrame:
        path = self.root / S.SPLITS_FILE
        if path.exists():
            return pl.read_parquet(path)
        # Fall back to the folder a subject's shard sits in.
        frames = [
            pl.scan_parquet(str(p)).select(S.SUBJECT_ID).unique()
            .with_columns(pl.lit(p.relative_to(self.root / S.DATA_DIR).parts[0]).alias("split"))
            for p in self.shard_paths()
        ]
        return pl.concat(frames).unique().collect() if frames else pl.DataFrame()

    def metadata(self) -> dict:
        path = self.root / S.DATASET_FILE
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"not valid JSON ({exc.msg}, line {exc.lineno})", where=str(path),
                            fix="repair or regenerate metadata/dataset.json") from None

    def fingerprint(self) -> str:
        """SHA-256 over the bytes of every data shard and metadata file, in path order.

        Identifies the exact dataset version in caches and model cards without
        revealing anything about its contents.
        """
        digest = hashlib.sha256()
        files = self.shard_paths() + sorted((self.root / "metadata").glob("*"))
        for path in files:
            if path.is_file():
                digest.update(str(path.relative_to(self.root)).encode())
                with open(path, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(block)
        return digest.hexdigest()
