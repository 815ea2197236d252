"""The site's count releases: bounded, Gaussian-noised, thresholded code counts and value sketches.

The vocabulary round is a release of private data, charged to the same privacy
ledger as DP-SGD (DESIGN.md). Both releases here are Gaussian mechanisms:

* **Code counts** (Gaussian sparse histogram, as in Google's DP partition
  selection, Desfontaines et al. 2022, and Wilkins et al. 2024): each patient
  contributes each code at most once and at most `k` distinct codes (chosen at
  random when they have more), so adding or removing a patient changes the
  count vector by at most sqrt(k) in L2. Noise N(0, sigma^2) with
  sigma = noise_multiplier * sqrt(k) is added, and counts under `threshold` are
  dropped.
  - With a public `candidates` list (the anchor's codes, the standard code
    lists) every candidate gets noise, zeros included: a pure Gaussian mechanism.
  - Without one (open domain) only codes present at the site get noise, so the
    key set itself leaks unless the threshold is high; the extra
    ``partition_delta`` (the chance that any of one patient's k singleton codes
    passes the threshold) is reported and must be added to the ledger's delta.
* **Value sketches** (per code, a DP histogram over a fixed public grid of
  candidate edges, e.g. `log_grid` or edges from the anchor): a patient gives
  one value (chosen at random) per code for at most `k` codes, so L2
  sensitivity is sqrt(k) again; quantile edges are read off the noisy
  cumulative histogram (`edges_from_histogram`), pure post-processing.

Each release states what the ledger must charge (`GaussianCharge`): the noise
multiplier sigma / sensitivity, sample rate 1 and one step, i.e. opacus'
``RDPAccountant.step(noise_multiplier=..., sample_rate=1.0)`` once per release.
Randomness (the contribution choice and the noise) comes from a numpy
Generator the caller owns: at a site, `noise.numpy_generator` keyed with 256
secret bits. Each noise value is a sum of four Gaussians (`noise.secure_normal`,
as Opacus' secure_mode) against the floating-point attack. The message types
the server reads stay in `fedehr.shared.tokenizer.dp_counts`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import polars as pl

from fedehr.client.privacy.noise import secure_normal
from fedehr.shared.data import schema as S
from fedehr.shared.errors import ConfigError
from fedehr.shared.tokenizer.dp_counts import CountRelease, GaussianCharge, HistogramRelease

# -- contribution bounding -----------------------------------------------------


def _check(k: int, noise_multiplier: float) -> None:
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}", where="vocabulary release",
                          fix="set the per-patient code limit k to a positive integer")
    if not noise_multiplier > 0:
        raise ConfigError(f"noise_multiplier must be positive, got {noise_multiplier}",
                          where="vocabulary release",
                          fix="a DP release needs noise; use exact counts only for public data")


def _pick(frame: pl.LazyFrame, by: str | list[str], k: int, seed: int) -> pl.LazyFrame:
    """Keep at most k rows per group `by`, chosen uniformly at random.

    The choice ranks rows by a seeded hash of (subject, code, row payload), so one
    patient's choice never depends on the other patients in the data.
    """
    key = pl.concat_str([pl.col(c).cast(pl.String) for c in frame.collect_schema().names()],
                        separator="\x1f", ignore_nulls=True)
    return (frame.with_columns(key.hash(seed=seed).alias("_h"))
            .filter(pl.col("_h").rank("ordinal").over(by) <= k).drop("_h"))


def bounded_code_counts(events: pl.DataFrame | pl.LazyFrame, k: int, seed: int,
                        candidates: Iterable[str] | None = None) -> pl.DataFrame:
    """Exact patient counts per code after bounding: once per patient, <= k codes each."""
    frame = events.lazy().select(S.SUBJECT_ID, S.CODE).filter(pl.col(S.CODE) != S.BIRTH_CODE)
    if candidates is not None:
        frame = frame.filter(pl.col(S.CODE).is_in(list(candidates)))
    frame = _pick(frame.unique(), S.SUBJECT_ID, k, seed)
    return frame.group_by(S.CODE).agg(pl.len().alias("count")).sort(S.CODE).collect()


def bounded_value_histograms(events: pl.DataFrame | pl.LazyFrame, codes: Iterable[str],
                             grid: np.ndarray, k: int, seed: int) -> dict[str, np.ndarray]:
    """Exact per-code histograms after bounding: one value per patient and code, <= k codes."""
    codes = list(codes)
    grid = np.asarray(grid, dtype=np.float64)
    frame = (events.lazy().select(S.SUBJECT_ID, S.CODE, S.NUMERIC_VALUE)
             .filter(pl.col(S.CODE).is_in(codes) & pl.col(S.NUMERIC_VALUE).is_not_null()
                     & pl.col(S.NUMERIC_VALUE).is_finite()))
    frame = _pick(frame, [S.SUBJECT_ID, S.CODE], 1, seed)  # one value per patient and code
    frame = _pick(frame, S.SUBJECT_ID, k, seed + 1)  # at most k codes per patient
    rows = frame.collect()
    flat = np.zeros((len(codes), len(grid) + 1))
    if rows.height:
        bins = np.searchsorted(grid, rows[S.NUMERIC_VALUE].to_numpy().astype(np.float64),
                               side="right")
        index = {c: i for i, c in enumerate(codes)}
        code_idx = np.fromiter((index[c] for c in rows[S.CODE].to_list()), dtype=np.int64)
        np.add.at(flat, (code_idx, bins), 1.0)
    return {c: flat[i] for i, c in enumerate(codes)}


# -- releases ------------------------------------------------------------------


def partition_delta(sigma: float, k: int, threshold: float) -> float:
    """Chance that any of one patient's k singleton codes survives the threshold."""
    p_one = 0.5 * math.erfc((threshold - 1.0) / (sigma * math.sqrt(2.0)))
    return -math.expm1(k * math.log1p(-min(p_one, 1.0 - 1e-16)))


def threshold_for_delta(sigma: float, k: int, delta: float) -> float:
    """The smallest threshold whose `partition_delta` is at most `delta`."""
    lo, hi = 1.0, 1.0 + 40.0 * sigma
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if partition_delta(sigma, k, mid) > delta:
            lo = mid
        else:
            hi = mid
    return hi


def release_code_counts(
    events: pl.DataFrame | pl.LazyFrame,
    *,
    k: int,
    noise_multiplier: float,
    threshold: float,
    rng: np.random.Generator,
    candidates: Iterable[str] | None = None,
) -> CountRelease:
    """Bounded, Gaussian-noised, thresholded patient counts of (mapped) codes."""
    _check(k, noise_multiplier)
    sigma = noise_multiplier * math.sqrt(k)
    cand = sorted(set(candidates)) if candidates is not None else None
    exact = bounded_code_counts(events, k, int(rng.integers(2**62)), cand)
    true = dict(exact.iter_rows())
    keys = cand if cand is not None else sorted(true)
    noisy = np.fromiter((true.get(c, 0) for c in keys), dtype=np.float64, count=len(keys))
    noisy += secure_normal(rng, sigma, (len(keys),))
    counts = {c: float(n) for c, n in zip(keys, noisy, strict=True) if n >= threshold}
    extra = partition_delta(sigma, k, threshold) if cand is None else 0.0
    return CountRelease(counts=counts, k=k, sigma=sigma, threshold=threshold,
                        open_domain=cand is None,
                        charge=GaussianCharge(noise_multiplier=noise_multiplier,
                                              extra_delta=extra))


def release_value_histograms(
    events: pl.DataFrame | pl.LazyFrame,
    *,
    codes: Iterable[str],
    grid: np.ndarray,
    k: int,
    noise_multiplier: float,
    rng: np.random.Generator,
) -> HistogramRelease:
    """Per-code DP value histograms over the public `grid` for the public list `codes`."""
    _check(k, noise_multiplier)
    grid = np.asarray(grid, dtype=np.float64)
    sigma = noise_multiplier * math.sqrt(k)
    exact = bounded_value_histograms(events, codes, grid, k, int(rng.integers(2**62)))
    noisy = {c: h + secure_normal(rng, sigma, h.shape) for c, h in exact.items()}
    return HistogramRelease(grid=grid, histograms=noisy, k=k, sigma=sigma,
                            charge=GaussianCharge(noise_multiplier=noise_multiplier))
