"""Encoding: a patient's MEDS events become one flat token timeline.

The layout follows ETHOS (static prefix, then events; numeric values as
quantile tokens; time-interval tokens between events) with CEHR-GPT's
log-spaced artificial time tokens and MEDS_EIC_AR's per-code value bins:

    GENDER//F  AGE//65-69  |  ICD10CM/I50.9  TIME//1d-2d  LOINC/2160-0//mg/dL Q7
    NOTE//DISCHARGE_SUMMARY [NOTE]  IMAGE//CHEST_XRAY [IMAGE]  PRO//PROMIS//FATIGUE Q3 ...

* static rows (null time) come first, then the age bucket at the first timed
  event (from MEDS_BIRTH, which itself emits no token);
* per event, in time order: a time token when the gap since the previous event
  is at least the smallest bucket (5 min), the code token (after
  `CodeMapping`, folding and UNK), then the quantile token when the event has a
  numeric value and the code has bin edges (with `Vocabulary.with_value_tokens`, the
  code's joint value token replaces both), or a modality marker whose position
  refers to the note text (`note_ref`) or the image study (`image_ref`);
* `times` are days since the patient's first timed event (0 on static tokens);
* PRO answers (numeric values of the vocabulary's PRO codes) are also kept
  apart with their time, for the windows' PRO vector.

Everything is vectorised (polars for joins and sorting, numpy for the
interleaving); Python loops run over distinct codes only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from fedehr.shared.data import schema as S
from fedehr.shared.data.dataset import MEDSDataset
from fedehr.shared.errors import DataError
from fedehr.shared.tokenizer.mapping import CodeMapping
from fedehr.shared.tokenizer.vocabulary import (
    AGE_TOKENS,
    IMAGE,
    NOTE,
    QUANTILE_TOKENS,
    TIME_TOKENS,
    Vocabulary,
    age_bucket,
    time_bucket,
)

NOTE_PREFIX = "NOTE//"
IMAGE_PREFIX = "IMAGE//"
_US_PER_DAY = 86_400_000_000.0
_DAYS_PER_YEAR = 365.25


@dataclass
class EncodedTimelines:
    """Flat token timelines of many patients (the arrays the cache stores)."""

    subject_ids: np.ndarray  # int64 [N]
    offsets: np.ndarray  # int64 [N+1]; patient i owns tokens[offsets[i]:offsets[i+1]]
    tokens: np.ndarray  # int32 [L]
    times: np.ndarray  # float32 [L] days since the patient's first timed event
    note_ref: np.ndarray  # int32 [L] index into note_texts, -1 elsewhere
    image_ref: np.ndarray  # int32 [L] index into image_ids, -1 elsewhere
    static_len: np.ndarray  # int32 [N] leading static tokens (static codes + age)
    birth: np.ndarray  # float32 [N] birth in days relative to time 0 (NaN: unknown)
    pro_offsets: np.ndarray  # int64 [N+1] into the pro_* arrays
    pro_times: np.ndarray  # float32 [M]
    pro_index: np.ndarray  # int32 [M] index into vocab.pro_codes
    pro_values: np.ndarray  # float32 [M] raw scores (PROMIS T-scores)
    note_texts: list[str] = field(default_factory=list)
    image_ids: list[str] = field(default_factory=list)
    n_events: int = 0

    def __len__(self) -> int:
        return len(self.subject_ids)

    def patient_tokens(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i]:self.offsets[i + 1]]

    @classmethod
    def concat(cls, parts: Sequence[EncodedTimelines]) -> EncodedTimelines:
        if not parts:
            raise DataError("nothing to concatenate", fix="encode at least one shard")
        if len(parts) == 1:
            return parts[0]
        notes, images = 0, 0
        note_refs, image_refs = [], []
        for p in parts:
            note_refs.append(np.where(p.note_ref >= 0, p.note_ref + notes, -1).astype(np.int32))
            image_refs.append(np.where(p.image_ref >= 0, p.image_ref + images, -1)
                              .astype(np.int32))
            notes += len(p.note_texts)
            images += len(p.image_ids)
        subject_ids = np.concatenate([p.subject_ids for p in parts])
        if len(np.unique(subject_ids)) != len(subject_ids):
            raise DataError("a subject appears in more than one shard",
                            fix="re-export the dataset so each subject sits in one shard")
        return cls(
            subject_ids=subject_ids,
            offsets=_concat_offsets([p.offsets for p in parts]),
            tokens=np.concatenate([p.tokens for p in parts]),
            times=np.concatenate([p.times for p in parts]),
            note_ref=np.concatenate(note_refs),
            image_ref=np.concatenate(image_refs),
            static_len=np.concatenate([p.static_len for p in parts]),
            birth=np.concatenate([p.birth for p in parts]),
            pro_offsets=_concat_offsets([p.pro_offsets for p in parts]),
            pro_times=np.concatenate([p.pro_times for p in parts]),
            pro_index=np.concatenate([p.pro_index for p in parts]),
            pro_values=np.concatenate([p.pro_values for p in parts]),
            note_texts=[t for p in parts for t in p.note_texts],
            image_ids=[t for p in parts for t in p.image_ids],
            n_events=sum(p.n_events for p in parts),
        )


def _concat_offsets(offsets: Sequence[np.ndarray]) -> np.ndarray:
    out, base = [np.zeros(1, dtype=np.int64)], 0
    for off in offsets:
        out.append(off[1:] + base)
        base += int(off[-1])
    return np.concatenate(out).astype(np.int64)


def _code_table(codes: list[str], vocab: Vocabulary) -> tuple[np.ndarray, np.ndarray,
                                                             np.ndarray, np.ndarray, np.ndarray]:
    """Per distinct mapped code: token id, row in the edge matrix (-1), PRO index (-1);
    the edge matrix, and per edge row the joint value token id of each bin (-1: none)."""
    resolved = [vocab.resolve(c) for c in codes]
    ids = np.fromiter((vocab.id(t) for t in resolved), dtype=np.int32, count=len(codes))
    edge_codes = sorted({t for t in resolved if t in vocab.bin_edges})
    width = max((len(vocab.bin_edges[t]) for t in edge_codes), default=0)
    matrix = np.full((len(edge_codes) + 1, max(width, 1)), np.inf)
    joint = np.full((len(edge_codes) + 1, len(QUANTILE_TOKENS)), -1, dtype=np.int64)
    for row, code in enumerate(edge_codes):
        edges = vocab.bin_edges[code]
        matrix[row, :len(edges)] = edges
        bins = vocab.value_token_ids.get(code, [])
        joint[row, :len(bins)] = bins
    edge_row = {c: i for i, c in enumerate(edge_codes)}
    rows = np.fromiter((edge_row.get(t, -1) for t in resolved), dtype=np.int64, count=len(codes))
    pro_pos = {c: i for i, c in enumerate(vocab.pro_codes)}
    pro = np.fromiter((pro_pos.get(t, -1) for t in resolved), dtype=np.int32, count=len(codes))
    return ids, rows, pro, matrix, joint


def encode_events(events: pl.DataFrame | pl.LazyFrame, vocab: Vocabulary,
                  mapping: CodeMapping | None = None) -> EncodedTimelines:
    """Encode the events of whole patients (all rows of each subject in one frame)."""
    frame = events.lazy().collect() if isinstance(events, pl.LazyFrame) else events
    frame = frame.select(S.SUBJECT_ID, pl.col(S.TIME).cast(pl.Datetime("us")), S.CODE,
                         S.NUMERIC_VALUE, S.TEXT_VALUE)
    if mapping is not None:
        frame = mapping.apply(frame)
    frame = frame.sort([S.SUBJECT_ID, S.TIME], nulls_last=False, maintain_order=True)
    is_birth = (frame[S.CODE] == S.BIRTH_CODE).to_numpy()
    births = (frame.filter(is_birth).group_by(S.SUBJECT_ID)
              .agg(pl.col(S.TIME).min().alias("birth")))
    frame = frame.filter(~is_birth)

    subj = frame[S.SUBJECT_ID].to_numpy()
    subjects = np.unique(np.concatenate([subj, births[S.SUBJECT_ID].to_numpy()]))
    n_pat = len(subjects)
    pidx = np.searchsorted(subjects, subj)
    t_us = frame[S.TIME].cast(pl.Int64).to_numpy(allow_copy=True)
    timed = ~frame[S.TIME].is_null().to_numpy()
    t_us = np.where(timed, t_us, 0).astype(np.int64)

    # time 0 per patient = first timed event
    big = np.iinfo(np.int64).max
    t0 = np.full(n_pat, big, dtype=np.int64)
    np.minimum.at(t0, pidx[timed], t_us[timed])
    has_t0 = t0 != big
    days = np.where(timed, (t_us - t0[pidx]) / _US_PER_DAY, 0.0)

    # token ids via the distinct codes
    codes = frame[S.CODE]
    uniq = codes.unique(maintain_order=True)
    code_ids, edge_rows, pro_rows, edge_matrix, joint_ids = _code_table(uniq.to_list(), vocab)
    cidx = pl.DataFrame({"c": codes}).join(
        pl.DataFrame({"c": uniq, "i": np.arange(len(uniq), dtype=np.int32)}),
        on="c", how="left", maintain_order="left")["i"].to_numpy()
    code_tok = code_ids[cidx].astype(np.int64)

    # value -> quantile token after the code, or the code's joint value token in its place
    values = frame[S.NUMERIC_VALUE].cast(pl.Float64).fill_null(np.nan).to_numpy()
    erow = edge_rows[cidx]
    has_bin = (erow >= 0) & np.isfinite(values)
    q_ids = np.array([vocab.id(t) for t in QUANTILE_TOKENS], dtype=np.int64)
    extra = np.full(len(frame), -1, dtype=np.int64)
    if has_bin.any():
        rows = erow[has_bin]
        bins = np.minimum((values[has_bin, None] >= edge_matrix[rows]).sum(axis=1),
                          len(q_ids) - 1)
        joint = joint_ids[rows, bins]
        extra[has_bin] = np.where(joint >= 0, -1, q_ids[bins])
        code_tok[has_bin] = np.where(joint >= 0, joint, code_tok[has_bin])

    # notes and images: marker token carrying a reference (their codes are not mapped)
    text = frame[S.TEXT_VALUE]
    note_mask = (codes.str.starts_with(NOTE_PREFIX) & text.is_not_null()).to_numpy()
    image_mask = (codes.str.starts_with(IMAGE_PREFIX) & text.is_not_null()).to_numpy()
    note_mask &= ~has_bin
    image_mask &= ~has_bin & ~note_mask
    extra[note_mask] = vocab.id(NOTE)
    extra[image_mask] = vocab.id(IMAGE)
    note_texts = text.filter(pl.Series(note_mask)).to_list()
    image_ids = text.filter(pl.Series(image_mask)).to_list()
    note_slot = np.full(len(frame), -1, dtype=np.int32)
    note_slot[note_mask] = np.arange(note_mask.sum(), dtype=np.int32)
    image_slot = np.full(len(frame), -1, dtype=np.int32)
    image_slot[image_mask] = np.arange(image_mask.sum(), dtype=np.int32)

    # time tokens between events (same patient, gap >= smallest bucket)
    prev_same = np.zeros(len(frame), dtype=bool)
    prev_same[1:] = (pidx[1:] == pidx[:-1]) & timed[:-1] & timed[1:]
    gap = np.zeros(len(frame))
    gap[1:] = days[1:] - days[:-1]
    bucket = np.where(prev_same, time_bucket(gap, vocab.time_edges_days), -1)
    t_ids = np.array([vocab.id(t) for t in TIME_TOKENS], dtype=np.int64)
    time_tok = np.where(bucket >= 0, t_ids[np.clip(bucket, 0, len(t_ids) - 1)], -1)

    # age token, inserted before each patient's first timed event
    birth_us = np.full(n_pat, np.nan)
    if births.height:
        b_idx = np.searchsorted(subjects, births[S.SUBJECT_ID].to_numpy())
        birth_us[b_idx] = births["birth"].cast(pl.Int64).to_numpy().astype(np.float64)
    birth_days = np.where(has_t0, (birth_us - np.where(has_t0, t0, 0)) / _US_PER_DAY, np.nan)
    age_pat = np.flatnonzero(has_t0 & np.isfinite(birth_days))
    a_ids = np.array([vocab.id(t) for t in AGE_TOKENS], dtype=np.int64)
    age_tok = a_ids[age_bucket(-birth_days[age_pat] / _DAYS_PER_YEAR)]
    first_timed = np.full(n_pat, len(frame), dtype=np.int64)
    np.minimum.at(first_timed, pidx[timed], np.flatnonzero(timed))
    at = first_timed[age_pat]

    slots = np.stack([time_tok, code_tok, extra], axis=1)
    slots = np.insert(slots, at, np.stack([np.full(len(at), -1), age_tok,
                                           np.full(len(at), -1)], axis=1), axis=0)
    row_days = np.insert(days, at, 0.0)
    row_pat = np.insert(pidx, at, age_pat)
    row_static = np.insert(~timed, at, True)
    row_note = np.insert(note_slot, at, -1)
    row_image = np.insert(image_slot, at, -1)

    keep = slots >= 0
    tokens = slots[keep].astype(np.int32)
    times = np.broadcast_to(row_days[:, None], slots.shape)[keep].astype(np.float32)
    refs = np.full(slots.shape, -1, dtype=np.int32)
    refs[:, 2] = row_note
    note_ref = refs[keep]
    refs[:, 2] = row_image
    image_ref = refs[keep]
    per_row = keep.sum(axis=1)
    counts = np.bincount(row_pat, weights=per_row, minlength=n_pat).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    static_len = np.bincount(row_pat, weights=per_row * row_static,
                             minlength=n_pat).astype(np.int32)

    # PRO answers, for the windows' PRO vector
    prow = pro_rows[cidx]
    pro_mask = (prow >= 0) & np.isfinite(values) & timed
    pro_counts = np.bincount(pidx[pro_mask], minlength=n_pat)
    return EncodedTimelines(
        subject_ids=subjects.astype(np.int64),
        offsets=offsets,
        tokens=tokens,
        times=times,
        note_ref=note_ref,
        image_ref=image_ref,
        static_len=static_len,
        birth=birth_days.astype(np.float32),
        pro_offsets=np.concatenate([[0], np.cumsum(pro_counts)]).astype(np.int64),
        pro_times=days[pro_mask].astype(np.float32),
        pro_index=prow[pro_mask].astype(np.int32),
        pro_values=values[pro_mask].astype(np.float32),
        note_texts=note_texts,
        image_ids=image_ids,
        n_events=len(frame) + int(is_birth.sum()),
    )


def encode_shard(path, vocab: Vocabulary, mapping: CodeMapping | None = None
                 ) -> EncodedTimelines:
    """One MEDS parquet shard (its subjects are in no other shard)."""
    frame = pl.read_parquet(path)
    for col, dtype in ((S.NUMERIC_VALUE, pl.Float32), (S.TEXT_VALUE, pl.String)):
        if col not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=dtype).alias(col))
    return encode_events(frame, vocab, mapping)


def encode_dataset(dataset: MEDSDataset, vocab: Vocabulary, mapping: CodeMapping | None = None,
                   split: str | None = None) -> EncodedTimelines:
    """Encode a whole dataset (or one split) in memory; the token cache builds shard by
    shard on disk instead (`cache.build_cache`)."""
    parts = [encode_shard(path, vocab, mapping) for path in dataset.shard_paths(split)]
    if not parts:
        raise DataError("no parquet shards found", where=str(dataset.root),
                        fix="check the dataset path and split name")
    return EncodedTimelines.concat(parts)
