"""Each label row's history: a patient's events up to the prediction time, as model input.

A label row (subject_id, prediction_time) may be one of several per patient
(one per admission or discharge), so every row gets its own cut of the
record: static rows and every event at or before the prediction time (the
ACES input windows end inclusive). The cuts are encoded by the tokenizer as if
each were a patient of its own, so the model sees exactly what it sees in
training, and the window keeps the *latest* tokens (the most recent history),
where training windows start at random.

`history_events` is shared with the count baseline, which counts the same
events.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from fedehr.shared.data import schema as S
from fedehr.shared.data.dataset import MEDSDataset
from fedehr.shared.errors import DataError
from fedehr.shared.tokenizer.cache import TokenCache
from fedehr.shared.tokenizer.encode import encode_events
from fedehr.shared.tokenizer.mapping import CodeMapping
from fedehr.shared.tokenizer.vocabulary import Vocabulary
from fedehr.shared.tokenizer.windows import PatientWindows, gather_image_vectors

ROW = "row"  # position of the label row a history belongs to
PREDICTION_TIME = "prediction_time"
IMAGE_SIDECAR = "images/embeddings.parquet"


def history_events(dataset: MEDSDataset, queries: pl.DataFrame) -> pl.DataFrame:
    """Events of each query row (subject_id, prediction_time) up to its prediction time.

    Returns the MEDS core columns with `subject_id` replaced by the query's
    position (`ROW`, int64, 0..n-1), so one patient with three admissions
    gives three histories.
    """
    rows = (queries.select(S.SUBJECT_ID, pl.col(PREDICTION_TIME).cast(pl.Datetime("us")))
            .with_row_index(ROW).with_columns(pl.col(ROW).cast(pl.Int64)))
    events = (dataset.scan().filter(pl.col(S.SUBJECT_ID).is_in(rows[S.SUBJECT_ID].unique()
                                                               .implode()))
              .with_columns(pl.col(S.TIME).cast(pl.Datetime("us"))).collect())
    # Keep the shard's order of events that share a time, as training's encoding does:
    # an order-preserving join and a stable sort (else a history's tokens, and so its
    # embedding, would depend on which other histories were built with it).
    joined = events.join(rows, on=S.SUBJECT_ID, how="inner", maintain_order="left")
    cut = joined.filter(pl.col(S.TIME).is_null() | (pl.col(S.TIME) <= pl.col(PREDICTION_TIME)))
    return cut.select(pl.col(ROW).alias(S.SUBJECT_ID), S.TIME, S.CODE, S.NUMERIC_VALUE,
                      S.TEXT_VALUE).sort([S.SUBJECT_ID, S.TIME], nulls_last=False,
                                         maintain_order=True)


def history_windows(dataset: MEDSDataset, queries: pl.DataFrame, vocab: Vocabulary, *,
                    max_len: int, mapping: CodeMapping | None = None, note_dim: int = 0,
                    image_dim: int = 0, note_encoder=None,
                    events: pl.DataFrame | None = None) -> PatientWindows:
    """Item i is the model input for query row i (the `batch.py` tuple): the latest
    tokens of its history (`PatientWindows(latest=True)`).

    Notes enter through `note_encoder` (a `NoteEncoder`, needed when `note_dim`
    > 0; zeros without one) and images through the dataset's
    images/embeddings.parquet sidecar, as at the sites.
    """
    events = history_events(dataset, queries) if events is None else events
    if mapping is None:
        mapping = CodeMapping.from_config(None, dataset.codes())
    encoded = encode_events(events, vocab, mapping)
    if len(encoded) != queries.height or not np.array_equal(
            encoded.subject_ids, np.arange(queries.height)):
        raise DataError("some prediction times have no history (no event at or before them)",
                        where=str(dataset.root), fix="check that the labels belong to this "
                        "dataset")
    cache = _memory_cache(encoded, vocab, dataset.root)
    notes = _note_vectors(encoded.note_texts, note_dim, note_encoder)
    images = _image_vectors(dataset, encoded.image_ids, image_dim)
    return PatientWindows(cache, vocab, max_len, note_vectors=notes, image_vectors=images,
                          latest=True)


def _memory_cache(encoded, vocab: Vocabulary, root: Path) -> TokenCache:
    from fedehr.shared.tokenizer.cache import ARRAYS

    meta = {"key": "histories", "vocab_hash": vocab.hash, "notes": len(encoded.note_texts),
            "images": len(encoded.image_ids)}
    cache = TokenCache(path=root, meta=meta, **{n: getattr(encoded, n) for n in ARRAYS})
    cache.note_texts = encoded.note_texts  # in memory, not the cache folder's JSON
    cache.image_ids = encoded.image_ids
    return cache


def _note_vectors(texts: list[str], dim: int, encoder) -> np.ndarray | None:
    if dim == 0:
        return None
    if encoder is None or not texts:
        return np.zeros((len(texts), dim), dtype=np.float32)
    if encoder.dim != dim:
        raise DataError(f"the note encoder gives {encoder.dim}-d vectors but the model "
                        f"expects {dim}", where="note encoder",
                        fix="use the consortium's note encoder, or evaluate without notes")
    return encoder.encode(list(texts)).numpy().astype(np.float32)


def _image_vectors(dataset: MEDSDataset, ids: list[str], dim: int) -> np.ndarray | None:
    if dim == 0:
        return None
    sidecar = dataset.root / IMAGE_SIDECAR
    if not ids or not sidecar.exists():
        return np.zeros((len(ids), dim), dtype=np.float32)
    vectors = gather_image_vectors(ids, sidecar)
    if vectors.shape[1] != dim:
        raise DataError(f"image embeddings are {vectors.shape[1]}-d but the model expects {dim}",
                        where=str(sidecar), fix="evaluate with the model's image encoder")
    return vectors
