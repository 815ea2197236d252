"""Token cache: memory-mapped arrays keyed by dataset, vocabulary and mapping."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from fedehr.shared.tokenizer.cache import TokenCache, load_or_build
from fedehr.shared.tokenizer.encode import encode_dataset
from fedehr.shared.tokenizer.mapping import CodeMapping
from fedehr.shared.tokenizer.merge import vocabulary_from_public


def _vocab(dataset, mapping, min_count=1):
    return vocabulary_from_public(mapping.apply(dataset.scan().collect()), min_count=min_count,
                                  min_anchor_values=10)


def test_cache_round_trip_gives_back_the_encoded_arrays(site_dataset, tmp_path):
    mapping = CodeMapping.from_config({}, site_dataset.codes())
    vocab = _vocab(site_dataset, mapping)
    cache = load_or_build(site_dataset, vocab, mapping, tmp_path / "cache")
    enc = encode_dataset(site_dataset, vocab, mapping)
    for name in ("subject_ids", "offsets", "tokens", "times", "note_ref", "image_ref",
                 "static_len", "pro_values"):
        np.testing.assert_array_equal(getattr(cache, name), getattr(enc, name))
    assert isinstance(cache.tokens, np.memmap)
    assert cache.note_texts == enc.note_texts and cache.image_ids == enc.image_ids


def test_second_call_opens_the_existing_cache_without_rebuilding(site_dataset, tmp_path):
    mapping = CodeMapping.from_config({}, site_dataset.codes())
    vocab = _vocab(site_dataset, mapping)
    first = load_or_build(site_dataset, vocab, mapping, tmp_path / "cache")
    stamp = (first.path / "tokens.npy").stat().st_mtime_ns
    second = load_or_build(site_dataset, vocab, mapping, tmp_path / "cache")
    assert second.path == first.path and (second.path / "tokens.npy").stat().st_mtime_ns == stamp


def test_cache_key_changes_when_the_vocabulary_or_mapping_changes(site_dataset, tmp_path):
    mapping = CodeMapping.from_config({}, site_dataset.codes())
    a = load_or_build(site_dataset, _vocab(site_dataset, mapping), mapping, tmp_path / "c")
    b = load_or_build(site_dataset, _vocab(site_dataset, mapping, min_count=100), mapping,
                      tmp_path / "c")
    other = CodeMapping(site_map={"LAB//X": "LOINC/1-1"}, parents=mapping.parents)
    c = load_or_build(site_dataset, _vocab(site_dataset, other), other, tmp_path / "c")
    assert len({a.key, b.key, c.key}) == 3


def test_a_fresh_process_opens_the_cache(site_dataset, tmp_path):
    mapping = CodeMapping.from_config({}, site_dataset.codes())
    cache = load_or_build(site_dataset, _vocab(site_dataset, mapping), mapping, tmp_path / "c")
    code = ("from fedehr.shared.tokenizer.cache import TokenCache;"
            f"c = TokenCache.open({str(cache.path)!r}); print(len(c), int(c.tokens.sum()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [str(len(cache)), str(int(np.asarray(cache.tokens).sum()))]
    assert TokenCache.open(cache.path).meta["events"] == site_dataset.scan().collect().height


def test_a_cache_built_shard_by_shard_equals_the_whole_encoding(tmp_path):
    """Several shards: offsets, note and image references shifted across the joins."""
    from fedehr.shared.data.dataset import MEDSDataset
    from fedehr.shared.data.writer import MEDSWriter
    from tests.shared.tokenizer.meds_builders import STANDARD_PARENTS, event_rows

    events = event_rows(25)
    with MEDSWriter(tmp_path / "ds", dataset_name="t", etl_name="tests",
                    subjects_per_shard=7) as writer:
        writer.add_events(events)
    dataset = MEDSDataset.open(tmp_path / "ds")
    assert len(dataset.shard_paths(None)) >= 4
    mapping = CodeMapping(parents=STANDARD_PARENTS)
    vocab = vocabulary_from_public(mapping.apply(events), min_count=1, min_anchor_values=10)
    cache = load_or_build(dataset, vocab, mapping, tmp_path / "cache")
    whole = encode_dataset(dataset, vocab, mapping)
    for name in ("subject_ids", "offsets", "tokens", "times", "note_ref", "image_ref",
                 "static_len", "birth", "pro_offsets", "pro_times", "pro_index", "pro_values"):
        np.testing.assert_array_equal(getattr(cache, name), getattr(whole, name), err_msg=name)
    assert cache.note_texts == whole.note_texts and cache.image_ids == whole.image_ids
    assert sorted(p.name for p in cache.path.iterdir() if p.is_dir()) == []  # parts removed
