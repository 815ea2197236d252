"""The site's DP release of code counts and value sketches: bounding, noise, threshold,
charge (and the shared message types and post-processing the server reads)."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from fedehr.client.privacy.count_release import (
    bounded_code_counts,
    bounded_value_histograms,
    partition_delta,
    release_code_counts,
    release_value_histograms,
    threshold_for_delta,
)
from fedehr.shared.errors import ConfigError
from fedehr.shared.tokenizer.dp_counts import CountRelease, edges_from_histogram, log_grid


def _events(pairs) -> pl.DataFrame:
    sids, codes = zip(*pairs, strict=True)
    return pl.DataFrame({"subject_id": list(sids), "code": list(codes)},
                        schema={"subject_id": pl.Int64, "code": pl.String})


def _population(n_patients: int = 200, n_codes: int = 30, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    pairs = [(p, f"C//{c}") for p in range(n_patients)
             for c in rng.choice(n_codes, size=rng.integers(1, 12), replace=True)]
    return _events(pairs)


def _as_vector(frame: pl.DataFrame, keys: list[str]) -> np.ndarray:
    counts = dict(frame.iter_rows())
    return np.array([counts.get(k, 0) for k in keys], dtype=float)


def test_a_patient_with_1000_codes_moves_bounded_counts_by_at_most_sqrt_k():
    k = 16
    base = _population()
    heavy = _events([(10_000, f"C//{c}") for c in range(1000)] * 2)  # repeats too
    before = bounded_code_counts(base, k, seed=7)
    after = bounded_code_counts(pl.concat([base, heavy]), k, seed=7)
    keys = sorted(set(before["code"]) | set(after["code"]))
    diff = _as_vector(after, keys) - _as_vector(before, keys)
    assert np.linalg.norm(diff) <= math.sqrt(k) + 1e-9
    assert diff.min() >= 0 and diff.sum() == k


def test_a_code_counts_once_per_patient():
    counts = bounded_code_counts(_events([(1, "A")] * 50 + [(2, "A")]), k=5, seed=0)
    assert dict(counts.iter_rows()) == {"A": 2}


def test_noise_has_the_calibrated_scale_and_the_charge_names_the_multiplier():
    rng = np.random.default_rng(123)
    candidates = [f"C//{c}" for c in range(2000)]  # public domain: zeros get noise too
    k, z = 4, 1.5
    release = release_code_counts(_events([(1, "C//0")]), k=k, noise_multiplier=z,
                                  threshold=-np.inf, rng=rng, candidates=candidates)
    noise = np.array([release.counts[c] for c in candidates[1:]])
    sigma = z * math.sqrt(k)
    assert release.sigma == pytest.approx(sigma)
    assert release.charge.noise_multiplier == z and release.charge.sample_rate == 1.0
    assert release.charge.steps == 1 and release.charge.extra_delta == 0.0
    # std of 1999 normals: relative standard error ~ 1/sqrt(2n) = 1.6%; allow 5 sigma
    assert abs(noise.std() / sigma - 1.0) < 5 / math.sqrt(2 * len(noise))
    assert abs(noise.mean()) < 5 * sigma / math.sqrt(len(noise))


def test_threshold_drops_rare_codes_and_keeps_common_ones():
    pairs = [(p, "COMMON") for p in range(500)] + [(1, "RARE"), (2, "RARE")]
    release = release_code_counts(_events(pairs), k=2, noise_multiplier=1.0, threshold=50.0,
                                  rng=np.random.default_rng(0))
    assert "COMMON" in release.counts and "RARE" not in release.counts


def test_open_domain_release_reports_its_partition_selection_delta():
    sigma, k = 3.0, 8
    tau = threshold_for_delta(sigma, k, 1e-6)
    assert partition_delta(sigma, k, tau) <= 1e-6 < partition_delta(sigma, k, tau - 0.5)
    release = release_code_counts(_events([(1, "A")]), k=k, noise_multiplier=sigma / math.sqrt(k),
                                  threshold=tau, rng=np.random.default_rng(0))
    assert release.open_domain and release.charge.extra_delta == pytest.approx(
        partition_delta(sigma, k, tau))


def test_release_survives_a_json_round_trip():
    release = release_code_counts(_population(), k=4, noise_multiplier=1.0, threshold=5.0,
                                  rng=np.random.default_rng(1))
    again = CountRelease.from_dict(release.to_dict())
    assert again.counts == release.counts and again.charge == release.charge


def test_a_release_without_noise_is_refused():
    with pytest.raises(ConfigError, match="noise_multiplier"):
        release_code_counts(_population(), k=4, noise_multiplier=0.0, threshold=0.0,
                            rng=np.random.default_rng(0))


def test_value_histogram_takes_one_value_per_patient_and_code():
    frame = pl.DataFrame({"subject_id": [1, 1, 1, 2], "code": ["L", "L", "L", "L"],
                          "numeric_value": [1.0, 2.0, 3.0, 4.0]})
    hist = bounded_value_histograms(frame, ["L"], log_grid(), k=3, seed=0)["L"]
    assert hist.sum() == 2


def test_dp_value_sketch_gives_quantile_edges_close_to_the_true_ones():
    rng = np.random.default_rng(5)
    values = np.exp(rng.normal(0.0, 0.5, size=5000))
    frame = pl.DataFrame({"subject_id": np.arange(5000), "code": ["L"] * 5000,
                          "numeric_value": values})
    grid = log_grid()
    release = release_value_histograms(frame, codes=["L"], grid=grid, k=1, noise_multiplier=2.0,
                                       rng=rng)
    edges = edges_from_histogram(release.histograms["L"], grid, noise_floor=2 * release.sigma)
    true = np.quantile(values, np.arange(1, 10) / 10)
    np.testing.assert_allclose(edges, true, rtol=0.1)
    assert release.charge.noise_multiplier == 2.0
