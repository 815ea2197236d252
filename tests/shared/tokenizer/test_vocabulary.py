"""Vocabulary: special, time, quantile and static tokens; folding; persistence."""

from __future__ import annotations

import numpy as np
import pytest

from fedehr.shared.errors import DataError
from fedehr.shared.tokenizer.batch import PAD_ID
from fedehr.shared.tokenizer.vocabulary import (
    PAD,
    TIME_TOKENS,
    UNK,
    Vocabulary,
    age_bucket,
    icd_parent,
    quantile_edges,
    time_bucket,
)

MINUTE = 1 / (24 * 60)


def test_pad_token_has_the_batch_contract_id():
    vocab = Vocabulary.build({}, min_count=1)
    assert vocab.id(PAD) == PAD_ID


def test_gaps_under_five_minutes_get_no_time_token_and_longer_gaps_log_buckets():
    gaps = np.array([1 * MINUTE, 5 * MINUTE, 20 * MINUTE, 1.5, 3.0, 400.0, 4000.0])
    buckets = time_bucket(gaps)
    assert buckets[0] == -1
    assert [TIME_TOKENS[b] for b in buckets[1:]] == [
        "TIME//5m-15m", "TIME//15m-30m", "TIME//1d-2d", "TIME//2d-4d", "TIME//1y+", "TIME//1y+"]
    assert 15 <= len(TIME_TOKENS) <= 20


def test_age_buckets_are_five_years_wide_and_open_above_ninety():
    assert list(age_bucket(np.array([0.0, 4.99, 5.0, 67.0, 89.9, 103.0]))) == [0, 0, 1, 13, 17, 18]


def test_quantile_edges_split_values_into_ten_equal_bins():
    values = np.arange(1000, dtype=float)
    edges = quantile_edges(values)
    assert len(edges) == 9
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=10)
    assert counts.min() >= 99 and counts.max() <= 101


def test_icd_parent_truncates_one_level_at_a_time():
    assert icd_parent("ICD10CM/I50.92") == "ICD10CM/I50.9"
    assert icd_parent("ICD10CM/I50.9") == "ICD10CM/I50"
    assert icd_parent("ICD10CM/I50") is None
    assert icd_parent("LOINC/2160-0") is None


def test_rare_siblings_fold_into_their_icd_parent():
    vocab = Vocabulary.build({"ICD10CM/I50.1": 3, "ICD10CM/I50.9": 4, "ICD10CM/J18.9": 20},
                             min_count=5)
    assert "ICD10CM/I50" in vocab and "ICD10CM/I50.9" not in vocab
    assert vocab.resolve("ICD10CM/I50.9") == "ICD10CM/I50"
    assert vocab.resolve("ICD10CM/J18.9") == "ICD10CM/J18.9"


def test_rare_code_folds_into_a_parent_code_from_codes_metadata():
    vocab = Vocabulary.build({"LOCAL//A": 2, "LOCAL//B": 4}, min_count=5,
                             parents={"LOCAL//A": ["GROUP//AB"], "LOCAL//B": ["GROUP//AB"]})
    assert vocab.resolve("LOCAL//A") == vocab.resolve("LOCAL//B") == "GROUP//AB"


def test_code_below_min_count_without_ancestor_becomes_unk():
    vocab = Vocabulary.build({"LOCAL//RARE": 2, "LOCAL//COMMON": 9}, min_count=5)
    assert vocab.resolve("LOCAL//RARE") == UNK
    assert list(vocab.lookup(["LOCAL//RARE", "NEVER//SEEN"])) == [vocab.unk_id] * 2


def test_json_round_trip_keeps_tokens_edges_folds_and_hash(tmp_path):
    vocab = Vocabulary.build({"ICD10CM/I50.9": 2, "ICD10CM/I50.1": 4, "LOINC/2160-0//mg/dL": 9},
                             min_count=5, bin_edges={"LOINC/2160-0//mg/dL": [0.1 * i
                                                                            for i in range(9)]})
    vocab.to_json(tmp_path / "vocab.json")
    again = Vocabulary.from_json(tmp_path / "vocab.json")
    assert again.tokens == vocab.tokens
    assert again.bin_edges == vocab.bin_edges and again.fold == vocab.fold
    assert again.hash == vocab.hash


def test_hash_is_stable_for_equal_content_and_changes_with_content():
    a = Vocabulary.build({"X//1": 9, "X//2": 9}, min_count=5)
    b = Vocabulary.build({"X//2": 9, "X//1": 9}, min_count=5)
    c = Vocabulary.build({"X//1": 9, "X//2": 9, "X//3": 9}, min_count=5)
    assert a.hash == b.hash
    assert a.hash != c.hash


def test_loading_a_file_that_is_not_a_vocabulary_names_the_file(tmp_path):
    path = tmp_path / "vocab.json"
    path.write_text('{"tokens": []}')
    with pytest.raises(DataError, match="vocab.json"):
        Vocabulary.from_json(path)
