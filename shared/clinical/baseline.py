"""Count-feature baseline: how often each code occurs in a history, then a linear model.

The classic non-neural reference for EHR prediction (bag-of-codes counts, as
in MEDS-Tab's count aggregations): for every history (the events up to the
prediction time, `history.history_events`), the number of events of each code,
after the same code mapping the model's tokenizer applies, log1p-transformed.
The columns are the codes seen in the training histories (at most
`max_codes`, most frequent first); a code unseen in training is ignored. The
model on top is `probes.fit_logistic`, so probe and baseline differ only in
their features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from fedehr.shared.data import schema as S
from fedehr.shared.tokenizer.mapping import CodeMapping

MAX_CODES = 2000


@dataclass(frozen=True)
class CountFeatures:
    """The code columns, fixed on the training histories."""

    codes: tuple[str, ...]

    @classmethod
    def fit(cls, events: pl.DataFrame, rows: np.ndarray, *, max_codes: int = MAX_CODES,
            mapping: CodeMapping | None = None) -> CountFeatures:
        frame = _mapped(events, mapping).filter(pl.col(S.SUBJECT_ID).is_in(rows.tolist()))
        top = (frame.group_by(S.CODE).len().sort(["len", S.CODE], descending=[True, False])
               .head(max_codes))
        return cls(codes=tuple(top[S.CODE].to_list()))

    def transform(self, events: pl.DataFrame, n_rows: int,
                  mapping: CodeMapping | None = None) -> np.ndarray:
        """float32 [n_rows, len(codes)] of log1p counts; row i is history i."""
        column = {c: j for j, c in enumerate(self.codes)}
        counts = (_mapped(events, mapping)
                  .filter(pl.col(S.CODE).is_in(list(self.codes)))
                  .group_by(S.SUBJECT_ID, S.CODE).len())
        out = np.zeros((n_rows, len(self.codes)), dtype=np.float32)
        rows = counts[S.SUBJECT_ID].to_numpy()
        cols = np.fromiter((column[c] for c in counts[S.CODE].to_list()), dtype=np.int64,
                           count=counts.height)
        out[rows, cols] = np.log1p(counts["len"].to_numpy().astype(np.float32))
        return out


def _mapped(events: pl.DataFrame, mapping: CodeMapping | None) -> pl.DataFrame:
    frame = events.select(S.SUBJECT_ID, S.CODE, S.NUMERIC_VALUE)
    return mapping.apply(frame) if mapping is not None else frame
