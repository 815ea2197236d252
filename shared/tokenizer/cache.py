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
                            fix="build it with `load_or_build`")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != CACHE_FORMAT:
            raise DataError(f"token cache format {meta.get('format')} is not {CACHE_FORMAT}",
                            where=str(path), fix="delete the folder; it is rebuilt on next use")
        arrays = {name: np.load(path / f"{name}.npy", mmap_mode="r") for name in ARRAYS}
        return cls(path=path, meta=meta, **arrays)


# Arrays indexed by patient that hold positions in another array: shifted by the
# length of that array in the shards before (the leading 0 is written once).
OFFSET_OF = {"offsets": "tokens", "pro_offsets": "pro_times"}
REF_OF = {"note_ref": "note_texts", "image_ref": "image_ids"}  # -1: no note / image


def build_cache(dataset, vocab, mapping, dest: str | os.PathLike, *, key: str,
                dataset_fingerprint: str, split: str | None = None) -> TokenCache:
    """Encode the dataset shard by shard into `dest`, in memory bounded by one shard.

    Each shard's arrays are saved as they come; the final arrays are then filled
    from them through memory maps, with offsets and note/image references shifted
    by the shards before. The arrays equal `encode_dataset`'s.
    Note texts and image ids are still held in memory (one string per note).
    """
    from fedehr.shared.tokenizer.encode import encode_shard

    dest = Path(dest)
    paths = dataset.shard_paths(split)
    if not paths:
        raise DataError("no parquet shards found", where=str(dataset.root),
                        fix="check the dataset path and split name")
    with staged_directory(dest, overwrite=True) as stage:
        lengths, texts, events, subjects = [], {"note_texts": [], "image_ids": []}, 0, []
        for i, shard in enumerate(paths):
            encoded = encode_shard(shard, vocab, mapping)
            part = stage / f"part-{i}"
            part.mkdir()
            for name in ARRAYS:
                np.save(part / f"{name}.npy", getattr(encoded, name))
            lengths.append({name: len(getattr(encoded, name))
                            for name in (*ARRAYS, *REF_OF.values())})
            for name in REF_OF.values():
                texts[name].extend(getattr(encoded, name))
            events += encoded.n_events
            subjects.append(encoded.subject_ids.copy())
            del encoded
        if len(np.unique(np.concatenate(subjects))) != sum(map(len, subjects)):
            raise DataError("a subject appears in more than one shard", where=str(dataset.root),
                            fix="re-export the dataset so each subject sits in one shard")
        for name in ARRAYS:
            _join_parts(stage, name, lengths)
        for i in range(len(paths)):
            (stage / f"part-{i}").rmdir()
        (stage / "notes.json").write_text(json.dumps(texts["note_texts"]))
        (stage / "images.json").write_text(json.dumps(texts["image_ids"]))
        meta = {"format": CACHE_FORMAT, "key": key, "dataset_fingerprint": dataset_fingerprint,
                "vocab_hash": vocab.hash, "mapping_hash": mapping.hash,
                "patients": int(sum(n["subject_ids"] for n in lengths)),
                "tokens": int(sum(n["tokens"] for n in lengths)), "events": int(events),
                "notes": len(texts["note_texts"]), "images": len(texts["image_ids"])}
        (stage / "meta.json").write_text(json.dumps(meta, indent=2))
    return TokenCache.open(dest)


def _join_parts(stage: Path, name: str, lengths: list[dict]) -> None:
    """One array from its per-shard parts, written through a memory map; parts deleted."""
    is_offsets = name in OFFSET_OF
    total = sum(n[name] - is_offsets for n in lengths) + is_offsets
    first = np.load(stage / "part-0" / f"{name}.npy", mmap_mode="r")
    out = np.lib.format.open_memmap(stage / f"{name}.npy", mode="w+", dtype=first.dtype,
                                    shape=(total,))
    del first
    at, shift = 0, 0
    for i, n in enumerate(lengths):
        part_path = stage / f"part-{i}" / f"{name}.npy"
        part = np.load(part_path, mmap_mode="r")
        if is_offsets:
            part = part[1:] if i else part
            out[at:at + len(part)] = part + shift
            shift += n[OFFSET_OF[name]]
        elif name in REF_OF:
            out[at:at + len(part)] = np.where(part >= 0, part + shift, -1)
            shift += n[REF_OF[name]]
        else:
            out[at:at + len(part)] = part
        at += len(part)
        del part
        part_path.unlink()
    out.flush()
    del out


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
    return build_cache(dataset, vocab, mapping, path, key=key,
                       dataset_fingerprint=fingerprint, split=split)
