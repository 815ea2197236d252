"""Merge: public anchor exact counts + DP site releases -> the shared vocabulary."""

from __future__ import annotations

import numpy as np
import polars as pl

from fedehr.client.privacy.count_release import release_value_histograms
from fedehr.shared.tokenizer.dp_counts import CountRelease, GaussianCharge, log_grid
from fedehr.shared.tokenizer.merge import (
    anchor_only_tokens,
    exact_code_counts,
    merge_vocabulary,
)


def _release(counts: dict[str, float]) -> CountRelease:
    return CountRelease(counts=counts, k=4, sigma=2.0, threshold=5.0, open_domain=True,
                        charge=GaussianCharge(noise_multiplier=1.0))


def test_anchor_counts_count_patients_not_events():
    frame = pl.DataFrame({"subject_id": [1, 1, 2, 2, 2], "code": ["A", "A", "A", "B", "B"]})
    assert exact_code_counts(frame) == {"A": 2, "B": 1}


def test_codes_kept_when_anchor_plus_noisy_site_counts_reach_min_count():
    vocab = merge_vocabulary(
        anchor_counts={"ANCHOR_ONLY": 30, "SHARED": 6, "TOO_RARE": 2},
        site_releases=[_release({"SHARED": 7.4, "SITE_ONLY": 25.0}), _release({"SHARED": 8.1})],
        min_count=20)
    assert {"ANCHOR_ONLY", "SHARED", "SITE_ONLY"} <= set(vocab.tokens)
    assert "TOO_RARE" not in vocab


def test_anchor_only_tokens_are_the_codes_the_sites_releases_leave_below_min_count():
    anchor = {"ANCHOR_ONLY": 30, "SHARED": 6, "RARE_AT_SITES": 25}
    releases = [_release({"SHARED": 7.4, "SITE_ONLY": 25.0, "RARE_AT_SITES": 6.0}),
                _release({"SHARED": 8.1, "RARE_AT_SITES": 5.5})]
    vocab = merge_vocabulary(anchor_counts=anchor, site_releases=releases, min_count=20)
    frozen = {vocab.tokens[i] for i in anchor_only_tokens(vocab, anchor, releases, 20)}
    # SHARED reaches 20 only with the anchor's 6 counted: the sites' 15.5 do not, so its
    # rows would learn from noise alone; time, value and special tokens always train
    assert frozen == {"ANCHOR_ONLY", "RARE_AT_SITES", "SHARED"}


def test_bin_edges_come_from_the_anchor_else_from_the_site_sketches():
    rng = np.random.default_rng(0)
    anchor_values = {"LOINC/A//mg/dL": np.arange(100.0)}
    site_values = np.exp(rng.normal(1.0, 0.3, size=3000))
    site = pl.DataFrame({"subject_id": np.arange(3000), "code": ["LOINC/B//mg/dL"] * 3000,
                         "numeric_value": site_values})
    sketch = release_value_histograms(site, codes=["LOINC/A//mg/dL", "LOINC/B//mg/dL"],
                                      grid=log_grid(), k=2, noise_multiplier=1.0, rng=rng)
    vocab = merge_vocabulary(anchor_counts={"LOINC/A//mg/dL": 50},
                             site_releases=[_release({"LOINC/B//mg/dL": 3000.0})],
                             min_count=10, anchor_values=anchor_values, site_histograms=[sketch])
    np.testing.assert_allclose(vocab.bin_edges["LOINC/A//mg/dL"],
                               np.quantile(np.arange(100.0), np.arange(1, 10) / 10))
    np.testing.assert_allclose(vocab.bin_edges["LOINC/B//mg/dL"],
                               np.quantile(site_values, np.arange(1, 10) / 10), rtol=0.1)


def test_a_sketch_of_pure_noise_gives_no_bin_edges():
    rng = np.random.default_rng(1)
    empty = pl.DataFrame({"subject_id": [1], "code": ["OTHER"], "numeric_value": [1.0]})
    sketch = release_value_histograms(empty, codes=["LOINC/C//mg/dL"], grid=log_grid(), k=4,
                                      noise_multiplier=1.0, rng=rng)
    vocab = merge_vocabulary(anchor_counts={"LOINC/C//mg/dL": 50}, min_count=10,
                             site_histograms=[sketch])
    assert "LOINC/C//mg/dL" in vocab and "LOINC/C//mg/dL" not in vocab.bin_edges
