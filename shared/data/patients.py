"""Finding a patient in the hospital's MEDS data for `fedehr model ask --patient`.

`fedehr site patients` lists subjects by id or by a cohort predicate (a code
pattern, or words of the code descriptions in metadata/codes.parquet), with
their split and the span of their record, so nobody reads parquet by hand. It
runs where the data is, for someone allowed to see that hospital's records:
the output names real patients (docs/ask.md, "Finding a patient").
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from fedehr.shared.data import schema as S
from fedehr.shared.data.dataset import MEDSDataset
from fedehr.shared.errors import DataError


def find_patients(root: Path, *, subject_id: int | None = None, code: str | None = None,
                  description: str | None = None, split: str | None = None,
                  limit: int = 20) -> pl.DataFrame:
    """One row per matching patient: subject_id, split, events, first, last, and the
    number of matching events (`matches`) when a predicate was given.

    `code` is a regular expression on the MEDS code (``^LAB//50912``); `description`
    matches words of a code's description, case-insensitive (``creatinine``).
    """
    data = MEDSDataset.open(root)
    events = data.scan()
    if subject_id is not None:
        events = events.filter(pl.col(S.SUBJECT_ID) == subject_id)
    codes: list[str] | None = None
    if description:
        table = data.codes()
        words = pl.col("description").str.to_lowercase()
        codes = table.filter(words.str.contains(description.lower(), literal=True)
                             )[S.CODE].to_list()
        if not codes:
            raise DataError(f"no code description matches {description!r}",
                            where=str(root / S.CODES_FILE), fix="try fewer or other words")
    matched = pl.lit(True)
    if code:
        matched = matched & pl.col(S.CODE).str.contains(code)
    if codes is not None:
        matched = matched & pl.col(S.CODE).is_in(codes)
    predicate = bool(code or codes)
    summary = events.group_by(S.SUBJECT_ID).agg(
        pl.len().alias("events"), pl.col(S.TIME).min().alias("first"),
        pl.col(S.TIME).max().alias("last"), matched.sum().alias("matches"))
    if predicate:
        summary = summary.filter(pl.col("matches") > 0)
    splits = data.subject_splits().lazy().select(S.SUBJECT_ID, "split")
    found = summary.join(splits, on=S.SUBJECT_ID, how="left")
    if split:
        found = found.filter(pl.col("split") == split)
    columns = [S.SUBJECT_ID, "split", "events", "first", "last"] + (["matches"] if predicate
                                                                     else [])
    return found.select(columns).sort(S.SUBJECT_ID).head(limit).collect()
