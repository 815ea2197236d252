"""Training windows: one window per patient per draw, as the `batch.py` tuple.

The patient is the privacy unit (DESIGN.md): the dataset's length is the number
of patients and item i is one window of patient i, so Poisson sampling over
indices (Opacus' DP data loader) samples patients, and each patient adds at
most one example to a batch. A window is

    [BOS] static prefix (static codes, age bucket at the window's start) events...

of at most `max_len` tokens, padded with PAD_ID. A timeline longer than the
budget gets a random start (drawn from ``(seed, epoch, index)``, so a draw is
reproducible and independent of worker order) moved back to the nearest
event boundary (never a quantile token or modality marker without its code),
as ETHOS and MEDS_EIC_AR sample random subsequences. Times restart at 0 on the
window's first event. At inference (`latest=True`: embeddings, probes, zero-shot
prompts) the window holds the most recent tokens instead, its start moved
forward to an event boundary. `window_span` is the one place where windows are
cut, for training and inference alike.

Note and image events read their vector from `note_vectors` [n_notes, Dn] and
`image_vectors` [n_studies, Di], aligned with the cache's `note_texts` and
`image_ids` (computed elsewhere by frozen encoders; `gather_image_vectors`
reads the synthetic hospitals' images/embeddings.parquet sidecar). None turns a
modality off (Dn or Di = 0). The PRO vector holds the patient's latest score per
vocabulary PRO code up to the window's last event, standardised as PROMIS
T-scores ((T - 50) / 10), 0 where unanswered, with pro_mask 1 when any answer exists.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import Dataset

from fedehr.shared.errors import ConfigError, DataError
from fedehr.shared.tokenizer.batch import PAD_ID
from fedehr.shared.tokenizer.cache import TokenCache
from fedehr.shared.tokenizer.vocabulary import AGE_TOKENS, BOS, Vocabulary, age_bucket

_DAYS_PER_YEAR = 365.25


def gather_image_vectors(image_ids: list[str], sidecar: str | os.PathLike) -> np.ndarray:
    """Image vectors aligned with `image_ids` from a (study_id, embedding) parquet; zeros
    for studies the sidecar lacks."""
    import pyarrow.parquet as pq

    table = pq.read_table(sidecar, columns=["study_id", "embedding"])
    ids = table.column("study_id").to_pylist()
    emb = np.asarray(table.column("embedding").to_pylist(), dtype=np.float32)
    if emb.ndim != 2:
        raise DataError("embeddings must be equal-length float lists", where=str(sidecar),
                        fix="regenerate the image embeddings sidecar")
    row = {s: i for i, s in enumerate(ids)}
    out = np.zeros((len(image_ids), emb.shape[1]), dtype=np.float32)
    for j, study in enumerate(image_ids):
        i = row.get(study)
        if i is not None:
            out[j] = emb[i]
    return out


def window_span(tokens: np.ndarray, lo: int, hi: int, static_len: int, max_len: int,
                continuation: np.ndarray, rng: np.random.Generator | None = None
                ) -> tuple[int, int, int]:
    """Where one patient's window lies in a token stream.

    The patient owns tokens[lo:hi], the first `static_len` of them static. Returns
    (start, stop, n_static): the events tokens[start:stop] and the first `n_static`
    static tokens, so that [BOS] + static + events fit `max_len`. With `rng` a
    timeline longer than the budget gets a random start moved back to the code it
    belongs to (training); without, the latest tokens are kept, the start moved
    forward past quantile tokens and markers whose code was cut off (inference).
    """
    n_static = min(static_len, max_len - 2)
    body_lo = lo + static_len
    budget = max_len - 1 - n_static
    if hi - body_lo <= budget:
        return body_lo, hi, n_static
    if rng is None:
        start = hi - budget
        while start < hi and continuation[tokens[start]]:
            start += 1
        return start, hi, n_static
    start = body_lo + int(rng.integers(0, hi - body_lo - budget + 1))
    while start > body_lo and continuation[tokens[start]]:
        start -= 1
    return start, min(start + budget, hi), n_static


class PatientWindows(Dataset):
    """Per patient index, one window of at most `max_len` tokens (the batch.py tuple):
    a random span per epoch, or with `latest` the most recent tokens."""

    def __init__(
        self,
        cache: TokenCache,
        vocab: Vocabulary,
        max_len: int,
        *,
        note_vectors: np.ndarray | None = None,
        image_vectors: np.ndarray | None = None,
        seed: int = 0,
        latest: bool = False,
    ):
        if max_len < 4:
            raise ConfigError(f"max_len must be at least 4, got {max_len}",
                              where="windows", fix="use a context length such as 256")
        if cache.vocab_hash != vocab.hash:
            raise DataError("the token cache was built with another vocabulary",
                            where=str(cache.path), fix="rebuild the cache for this vocabulary")
        self.cache, self.vocab, self.max_len, self.seed = cache, vocab, max_len, seed
        self.latest = latest
        self.epoch = 0
        self.note_vectors = self._check_vectors(note_vectors, cache.meta["notes"], "note")
        self.image_vectors = self._check_vectors(image_vectors, cache.meta["images"], "image")
        self._continuation = vocab.continuation_mask()
        self._age_ids = np.array([vocab.id(t) for t in AGE_TOKENS])
        self._bos = vocab.id(BOS)
        self._n_pro = len(vocab.pro_codes)

    @staticmethod
    def _check_vectors(vectors: np.ndarray | None, n: int, what: str) -> np.ndarray | None:
        if vectors is None:
            return None
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != n:
            raise DataError(f"{what} vectors have shape {vectors.shape}, expected ({n}, D)",
                            where="windows", fix=f"encode exactly the cache's {what} list")
        return vectors

    def set_epoch(self, epoch: int) -> None:
        """Draw new window starts (call once per pass over the patients)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.cache)

    def window_bounds(self, index: int) -> tuple[int, int, int]:
        """(start, stop) of the event part in the patient's token range, and prefix length."""
        c = self.cache
        rng = None if self.latest else np.random.default_rng([self.seed, self.epoch, index])
        return window_span(c.tokens, int(c.offsets[index]), int(c.offsets[index + 1]),
                           int(c.static_len[index]), self.max_len, self._continuation, rng)

    def __getitem__(self, index: int):
        c, T = self.cache, self.max_len
        if not 0 <= index < len(c):
            raise IndexError(index)
        start, stop, n_static = self.window_bounds(index)
        lo = int(c.offsets[index])
        prefix = np.array(c.tokens[lo:lo + n_static], dtype=np.int64)
        body = np.asarray(c.tokens[start:stop], dtype=np.int64)
        body_times = np.asarray(c.times[start:stop], dtype=np.float64)
        t_start = body_times[0] if body.size else 0.0
        birth = float(c.birth[index])
        is_age = np.isin(prefix, self._age_ids)
        if is_age.any() and np.isfinite(birth) and body.size:
            prefix[is_age] = self._age_ids[age_bucket((t_start - birth) / _DAYS_PER_YEAR)]

        n = 1 + n_static + body.size
        tokens = np.full(T, PAD_ID, dtype=np.int64)
        tokens[0] = self._bos
        tokens[1:1 + n_static] = prefix
        tokens[1 + n_static:n] = body
        times = np.zeros(T, dtype=np.float32)
        times[1 + n_static:n] = body_times - t_start

        note_emb = self._embed(self.note_vectors, c.note_ref[start:stop], 1 + n_static)
        image_emb = self._embed(self.image_vectors, c.image_ref[start:stop], 1 + n_static)
        t_end = body_times[-1] if body.size else -np.inf
        pro, pro_mask = self._pro(index, t_end)
        return (torch.from_numpy(tokens), torch.from_numpy(times), torch.from_numpy(note_emb),
                torch.from_numpy(image_emb), torch.from_numpy(pro),
                torch.tensor(pro_mask, dtype=torch.float32))

    def _embed(self, vectors: np.ndarray | None, refs: np.ndarray, at: int) -> np.ndarray:
        dim = 0 if vectors is None else vectors.shape[1]
        out = np.zeros((self.max_len, dim), dtype=np.float32)
        if vectors is not None:
            refs = np.asarray(refs)
            pos = np.flatnonzero(refs >= 0)
            out[at + pos] = vectors[refs[pos]]
        return out

    def _pro(self, index: int, t_end: float) -> tuple[np.ndarray, float]:
        c = self.cache
        pro = np.zeros(self._n_pro, dtype=np.float32)
        lo, hi = int(c.pro_offsets[index]), int(c.pro_offsets[index + 1])
        if hi == lo or self._n_pro == 0:
            return pro, 0.0
        times = np.asarray(c.pro_times[lo:hi])
        sel = np.flatnonzero(times <= t_end)
        if sel.size == 0:
            return pro, 0.0
        idx = np.asarray(c.pro_index[lo:hi])[sel][::-1]  # latest first (encoded in time order)
        vals = np.asarray(c.pro_values[lo:hi])[sel][::-1]
        codes, first = np.unique(idx, return_index=True)
        pro[codes] = (vals[first] - 50.0) / 10.0
        return pro, 1.0
