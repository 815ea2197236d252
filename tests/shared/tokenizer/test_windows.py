"""Windows: one window per patient, the batch.py tuple, deterministic with a seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from fedehr.shared.tokenizer.batch import PAD_ID, Batch
from fedehr.shared.tokenizer.cache import load_or_build
from fedehr.shared.tokenizer.mapping import CodeMapping
from fedehr.shared.tokenizer.merge import vocabulary_from_public
from fedehr.shared.tokenizer.windows import PatientWindows


@pytest.fixture
def built(site_dataset, tmp_path):
    mapping = CodeMapping.from_config({}, site_dataset.codes())
    vocab = vocabulary_from_public(mapping.apply(site_dataset.scan().collect()), min_count=1,
                                   min_anchor_values=10)
    return load_or_build(site_dataset, vocab, mapping, tmp_path / "cache"), vocab


def test_dataset_length_is_the_number_of_patients(built):
    cache, vocab = built
    assert len(PatientWindows(cache, vocab, 64)) == 40


def test_short_timeline_is_bos_then_the_whole_timeline_then_padding(built):
    cache, vocab = built
    tokens, times, *_ = PatientWindows(cache, vocab, 64)[0]
    n = int(cache.offsets[1] - cache.offsets[0])
    assert tokens.dtype == torch.int64 and tokens.shape == (64,)
    assert tokens[0] == vocab.id("[BOS]")
    assert tokens[1:1 + n].tolist() == cache.tokens[:n].tolist()
    assert (tokens[1 + n:] == PAD_ID).all() and (times[1 + n:] == 0).all()


def test_long_timeline_gets_a_window_of_max_len_starting_at_an_event(built):
    cache, vocab = built
    ds = PatientWindows(cache, vocab, 12, seed=3)
    cont = vocab.continuation_mask()
    for i in range(len(ds)):
        tokens, times, *_ = ds[i]
        assert tokens.shape == (12,) and (tokens != PAD_ID).all()
        n_static = int(cache.static_len[i])
        assert not cont[int(tokens[1 + n_static])]
        assert times[1 + n_static] == 0.0 and (times[1 + n_static:].diff() >= 0).all()


def test_same_seed_gives_the_same_windows_and_a_new_epoch_new_ones(built):
    cache, vocab = built
    a, b = PatientWindows(cache, vocab, 10, seed=1), PatientWindows(cache, vocab, 10, seed=1)
    first = [a[i][0] for i in range(len(a))]
    assert all(torch.equal(x, b[i][0]) for i, x in enumerate(first))
    a.set_epoch(1)
    assert any(not torch.equal(x, a[i][0]) for i, x in enumerate(first))


def test_item_is_exactly_the_batch_tuple_and_collates(built):
    cache, vocab = built
    ds = PatientWindows(cache, vocab, 32, note_vectors=np.ones((40, 8), np.float32),
                        image_vectors=np.ones((40, 5), np.float32))
    batch = Batch.from_tuple(next(iter(DataLoader(ds, batch_size=4))))
    assert batch.tokens.shape == (4, 32) and batch.tokens.dtype == torch.int64
    assert batch.times.dtype == torch.float32 and batch.note_emb.shape == (4, 32, 8)
    assert batch.image_emb.shape == (4, 32, 5) and batch.pro.shape == (4, 1)
    assert batch.pro_mask.shape == (4,) and batch.pro_mask.dtype == torch.float32


def test_switched_off_modalities_have_zero_width(built):
    cache, vocab = built
    _, _, note_emb, image_emb, *_ = PatientWindows(cache, vocab, 32)[0]
    assert note_emb.shape == (32, 0) and image_emb.shape == (32, 0)


def test_note_and_image_vectors_sit_at_their_marker_positions(built):
    cache, vocab = built
    notes = np.arange(40 * 3, dtype=np.float32).reshape(40, 3)
    images = -np.arange(40 * 2, dtype=np.float32).reshape(40, 2) - 1
    tokens, _, note_emb, image_emb, *_ = PatientWindows(cache, vocab, 64, note_vectors=notes,
                                                        image_vectors=images)[2]
    note_at = int(torch.nonzero(tokens == vocab.id("[NOTE]"))[0])
    image_at = int(torch.nonzero(tokens == vocab.id("[IMAGE]"))[0])
    assert torch.equal(note_emb[note_at], torch.from_numpy(notes[2]))
    assert torch.equal(image_emb[image_at], torch.from_numpy(images[2]))
    assert note_emb.abs().sum() == notes[2].sum() and image_emb.abs().sum() == -images[2].sum()


def test_pro_vector_is_the_latest_answer_standardised(built):
    cache, vocab = built
    _, _, _, _, pro, pro_mask = PatientWindows(cache, vocab, 64)[0]
    assert pro_mask == 1.0
    assert pro[0] == pytest.approx((float(cache.pro_values[0]) - 50) / 10)


def test_window_ending_before_any_pro_answer_has_no_pro(built):
    cache, vocab = built
    ds = PatientWindows(cache, vocab, 6, seed=0)  # too short to reach day 30
    masks = [float(ds[i][5]) for i in range(len(ds))]
    assert 0.0 in masks
