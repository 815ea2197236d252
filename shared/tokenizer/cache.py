"""The site's token cache: encoded timelines as memory-mapped numpy arrays on disk.

A site tokenizes its MEDS data once per (dataset, vocabulary, mapping) and every
later round, restart or worker process opens the arrays memory-mapped instead
of reading MEDS again (STACK-NOTES: Flower starts a fresh ClientApp process per
message; MEDS_EIC_AR and ETHOS likewise pre-tokenize to flat arrays plus
per-subject offsets). Layout of ``<cache_dir>/<key>/``:

    tokens.npy int32 [L]   times.npy float32 [L]   note_ref.npy / image_ref.npy int32 [L]
    offsets.npy int64 [N+1]   subject_ids.npy int64 [N]   static_len.npy int32 [N]
    birth.npy float32 [N]   pro_offsets.npy int64 [N+1]   pro_times/pro_values float32,
    pro_index int32 [M]   notes.json (note texts)   images.json (image study ids)
    meta.json (key parts, counts, format version)

The key is SHA-256 over the dataset fingerprint, the vocabulary hash, the
mapping hash and the cache format version, so a new vocabulary or a changed
harmonisation map gives a new folder and never a stale read. The folder is
written in a staging sibling and renamed into place (`atomic.staged_directory`),
so a reader sees a complete cache or none. Opening imports only numpy.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from fedehr.shared.atomic import staged_directory
from fedehr.shared.errors import DataError

CACHE_FORMAT = 1
ARRAYS = ("subject_ids", "offsets", "tokens", "times", "note_ref", "image_ref", "static_len",
          "birth", "pro_offsets", "pro_times", "pro_index", "pro_values")


def cache_key(dataset_fingerprint: str, vocab_hash: str, mapping_hash: str) -> str:
    text = json.dumps([CACHE_FORMAT, dataset_fingerprint, vocab_hash, mapping_hash])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass
class TokenCache:
    """An opened cache: the `EncodedTimelines` arrays, memory-mapped read-only."""

    path: Path
    meta: dict
    subject_ids: np.ndarray
    offsets: np.ndarray
    tokens: np.ndarray
    times: np.ndarray
    note_ref: np.ndarray
    image_ref: np.ndarray
    static_len: np.ndarray
    birth: np.ndarray
    pro_offsets: np.ndarray
    pro_times: np.ndarray
    pro_index: np.ndarray
    pro_values: np.ndarray

    def __len__(self) -> int:
        return len(self.subject_ids)

    @property
    def key(self) -> str:
        return self.meta["key"]

    @property
    def vocab_hash(self) -> str:
        return self.meta["vocab_hash"]

    @cached_property
    def note_texts(self) -> list[str]:
        """Texts of the note events, in `note_ref` order (loaded on first use)."""
        return json.loads((self.path / "notes.json").read_text())

    @cached_property
    def image_ids(self) -> list[str]:
        """Study ids of the image events, in `image_ref` order (loaded on first use)."""
        return json.loads((self.path / "images.json").read_text())

    @classmethod
    def open(cls, path: str | os.PathLike) -> TokenCache:
        path = Path(path)
        meta_path = path / "meta.json"
        if not meta_path.exists():
            raise DataError("not a token cache (no meta.json)", where=str(path),
                            fix="build it with `write_cache` / `load_or_build`")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != CACHE_FORMAT:
            raise DataError(f"token cache format {meta.get('format')} is not {CACHE_FORMAT}",
                            where=str(path), fix="delete the folder; it is rebuilt on next use")
        arrays = {name: np.load(path / f"{name}.npy", mmap_mode="r") for name in ARRAYS}
        return cls(path=path, meta=meta, **arrays)


def write_cache(encoded, dest: str | os.PathLike, *, key: str, dataset_fingerprint: str,
                vocab_hash: str, mapping_hash: str) -> TokenCache:
    """Write `EncodedTimelines` to `dest` atomically and open it."""
    dest = Path(dest)
    with staged_directory(dest, overwrite=True) as stage:
        for name in ARRAYS:
            np.save(stage / f"{name}.npy", np.ascontiguousarray(getattr(encoded, name)))
        (stage / "notes.json").write_text(json.dumps(encoded.note_texts))
        (stage / "images.json").write_text(json.dumps(encoded.image_ids))
        meta = {"format": CACHE_FORMAT, "key": key, "dataset_fingerprint": dataset_fingerprint,
                "vocab_hash": vocab_hash, "mapping_hash": mapping_hash,
                "patients": int(len(encoded.subject_ids)), "tokens": int(len(encoded.tokens)),
                "events": int(encoded.n_events), "notes": len(encoded.note_texts),
                "images": len(encoded.image_ids)}
        (stage / "meta.json").write_text(json.dumps(meta, indent=2))
    return TokenCache.open(dest)


def load_or_build(dataset, vocab, mapping, cache_dir: str | os.PathLike, *,
                  split: str | None = None, fingerprint: str | None = None) -> TokenCache:
    """Open the cache for (dataset, vocab, mapping), building it first when missing.

    `fingerprint` saves re-hashing the dataset when the caller already knows it.
    """
    fingerprint = fingerprint or dataset.fingerprint()
    key = cache_key(f"{fingerprint}:{split or 'all'}", vocab.hash, mapping.hash)
    path = Path(cache_dir) / key
    if (path / "meta.json").exists():
        return TokenCache.open(path)
    from fedehr.shared.tokenizer.encode import encode_dataset

    encoded = encode_dataset(dataset, vocab, mapping, split=split)
    return write_cache(encoded, path, key=key, dataset_fingerprint=fingerprint,
                       vocab_hash=vocab.hash, mapping_hash=mapping.hash)
