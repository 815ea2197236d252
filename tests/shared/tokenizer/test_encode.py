"""Encoding: MEDS events -> one flat token timeline per patient."""

from __future__ import annotations

import numpy as np

from fedehr.shared.tokenizer.encode import encode_dataset, encode_events
from fedehr.shared.tokenizer.mapping import CodeMapping
from fedehr.shared.tokenizer.merge import vocabulary_from_public
from tests.shared.tokenizer.meds_builders import STANDARD_PARENTS, event_rows


def _setup(n=20):
    events = event_rows(n)
    mapping = CodeMapping(parents=STANDARD_PARENTS)
    vocab = vocabulary_from_public(mapping.apply(events), min_count=1, min_anchor_values=10)
    return events, mapping, vocab


def test_timeline_is_static_prefix_then_events_with_time_and_quantile_tokens():
    events, mapping, vocab = _setup()
    enc = encode_events(events, vocab, mapping)
    words = [vocab.tokens[t] for t in enc.patient_tokens(0)]
    assert words[:2] == ["GENDER//M", "AGE//40-44"] and enc.static_len[0] == 2
    # 2 minutes after admission: no time token; 6 hours later: one
    assert words[2:5] == ["HOSPITAL_ADMISSION//EMERGENCY", "ICD10CM/I50.9", "TIME//4h-8h"]
    assert words[5] == "LOINC/2160-0//mg/dL" and words[6].startswith("Q")
    assert "MEDS_BIRTH" not in words


def test_quantile_token_follows_the_value_under_the_codes_own_edges():
    events, mapping, vocab = _setup()
    enc = encode_events(events, vocab, mapping)
    edges = vocab.bin_edges["LOINC/2160-0//mg/dL"]
    code_id = vocab.id("LOINC/2160-0//mg/dL")
    positions = np.flatnonzero(enc.tokens == code_id)
    values = events.filter(events["code"] == "LAB//2160-0//mg/dL")["numeric_value"].to_numpy()
    expected = np.searchsorted(edges, values, side="right")
    got = [int(vocab.tokens[t][1:]) for t in enc.tokens[positions + 1]]
    assert got == list(expected)



def test_value_tokens_write_a_value_as_one_token_in_the_codes_place():
    events, mapping, vocab = _setup()
    joint = vocab.with_value_tokens()
    assert joint.tokens[:len(vocab)] == vocab.tokens  # old ids keep their meaning
    plain, fused = encode_events(events, vocab, mapping), encode_events(events, joint, mapping)
    code = "LOINC/2160-0//mg/dL"
    after = plain.tokens[np.flatnonzero(plain.tokens == vocab.id(code)) + 1]
    written = [joint.tokens[t] for t in fused.tokens if joint.tokens[t].startswith(code)]
    assert written == [f"{code}//{vocab.tokens[q]}" for q in after]
    assert not np.isin(fused.tokens, [joint.id(f"Q{i}") for i in range(10)]).any()
    assert len(fused.tokens) == len(plain.tokens) - int(np.isin(
        plain.tokens, [vocab.id(f"Q{i}") for i in range(10)]).sum())

def test_times_are_days_since_the_first_event():
    events, mapping, vocab = _setup(3)
    enc = encode_events(events, vocab, mapping)
    times = enc.times[enc.offsets[0]:enc.offsets[1]]
    assert times[0] == 0.0 and times[enc.static_len[0]] == 0.0
    assert times.max() == 30.0


def test_notes_and_images_become_markers_that_refer_to_their_text_and_study():
    events, mapping, vocab = _setup(4)
    enc = encode_events(events, vocab, mapping)
    note_pos = np.flatnonzero(enc.note_ref >= 0)
    image_pos = np.flatnonzero(enc.image_ref >= 0)
    assert all(vocab.tokens[t] == "[NOTE]" for t in enc.tokens[note_pos])
    assert all(vocab.tokens[t] == "[IMAGE]" for t in enc.tokens[image_pos])
    assert [enc.note_texts[r] for r in enc.note_ref[note_pos]] == [
        f"note of patient {s}" for s in enc.subject_ids]
    assert [enc.image_ids[r] for r in enc.image_ref[image_pos]] == [
        f"study-{s}" for s in enc.subject_ids]


def test_pro_answers_are_kept_with_their_time():
    events, mapping, vocab = _setup(5)
    enc = encode_events(events, vocab, mapping)
    assert vocab.pro_codes == ["PRO//PROMIS//FATIGUE"]
    assert list(np.diff(enc.pro_offsets)) == [1] * 5
    assert np.all(enc.pro_times == 30.0) and np.all(enc.pro_index == 0)


def test_encoding_a_dataset_shard_by_shard_equals_encoding_it_at_once(tmp_path):
    from tests.shared.tokenizer.meds_builders import write_meds

    events, mapping, vocab = _setup(30)
    ds = write_meds(tmp_path / "ds", events)
    whole = encode_events(ds.scan(), vocab, mapping)
    by_shard = encode_dataset(ds, vocab, mapping)
    order = np.argsort(by_shard.subject_ids)
    for i, j in enumerate(order):
        np.testing.assert_array_equal(whole.patient_tokens(i), by_shard.patient_tokens(j))
