"""The server side of the vocabulary round: public anchor + DP site releases -> Vocabulary.

Public data costs no privacy budget (DESIGN.md), so the anchor contributes
exact patient counts and exact values; each site contributes the noisy,
thresholded counts of `dp_counts.release_code_counts` and, in a second
release, noisy value histograms for the codes the anchor has too few values
of. Merged count = anchor count + the sum of the sites' noisy counts; a code is
kept when that reaches `min_count` (rare codes fold into an ancestor first, see
`Vocabulary.build`). Bin edges come from the anchor's values where it has at
least `min_anchor_values` of them (ETHOS and MEDS_EIC_AR compute quantiles on
the training data; here the training data that is public), else from the
pooled DP histograms.

All inputs are mapped codes (`mapping.CodeMapping.apply` ran first), so values
are in canonical units and counts of one standard code add up across sources.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import polars as pl

from fedehr.shared.data import schema as S
from fedehr.shared.errors import DataError
from fedehr.shared.tokenizer.dp_counts import CountRelease, HistogramRelease, edges_from_histogram
from fedehr.shared.tokenizer.vocabulary import N_QUANTILES, Vocabulary, quantile_edges


def exact_code_counts(events: pl.DataFrame | pl.LazyFrame) -> dict[str, int]:
    """Patients per code (each patient counts once per code), for public data."""
    frame = (events.lazy().filter(pl.col(S.CODE) != S.BIRTH_CODE)
             .group_by(S.CODE).agg(pl.col(S.SUBJECT_ID).n_unique().alias("n")).collect())
    return dict(frame.iter_rows())


def exact_values(events: pl.DataFrame | pl.LazyFrame) -> dict[str, np.ndarray]:
    """All finite numeric values per code, for public data."""
    frame = (events.lazy().select(S.CODE, S.NUMERIC_VALUE)
             .filter(pl.col(S.NUMERIC_VALUE).is_not_null() & pl.col(S.NUMERIC_VALUE).is_finite())
             .group_by(S.CODE).agg(pl.col(S.NUMERIC_VALUE)).collect())
    return {c: np.asarray(v, dtype=np.float64) for c, v in frame.iter_rows()}


def merged_counts(anchor_counts: Mapping[str, float],
                  site_releases: Iterable[CountRelease]) -> dict[str, float]:
    total: dict[str, float] = {c: float(n) for c, n in anchor_counts.items()}
    for release in site_releases:
        for code, n in release.counts.items():
            total[code] = total.get(code, 0.0) + float(n)
    return total


def anchor_only_tokens(vocab: Vocabulary, anchor_counts: Mapping[str, float],
                       site_releases: Iterable[CountRelease], min_count: float) -> list[int]:
    """Ids of the anchor's code tokens that the sites' released counts, summed, leave
    below `min_count`: in the vocabulary for the anchor's sake, and rarely or never in
    a site's records. Read from DP releases only, so a site that keeps their rows as
    sent reveals nothing about which codes it holds."""
    at_sites = merged_counts({}, site_releases)
    return [i for i, token in enumerate(vocab.tokens)
            if token in anchor_counts and at_sites.get(token, 0.0) < min_count]


def pooled_histograms(releases: Sequence[HistogramRelease]) -> tuple[np.ndarray | None,
                                                                    dict[str, np.ndarray]]:
    """Sum the sites' histograms per code; all must use the same public grid."""
    if not releases:
        return None, {}
    grid = releases[0].grid
    pooled: dict[str, np.ndarray] = {}
    for release in releases:
        if release.grid.shape != grid.shape or not np.allclose(release.grid, grid):
            raise DataError("site value histograms use different grids",
                            where="vocabulary round",
                            fix="send every site the same public grid")
        for code, hist in release.histograms.items():
            pooled[code] = pooled.get(code, 0.0) + hist
    return grid, pooled


def merge_vocabulary(
    *,
    anchor_counts: Mapping[str, float],
    site_releases: Sequence[CountRelease] = (),
    min_count: float,
    parents: Mapping[str, Iterable[str]] | None = None,
    anchor_values: Mapping[str, np.ndarray] | None = None,
    site_histograms: Sequence[HistogramRelease] = (),
    min_anchor_values: int = 20,
    n_bins: int = N_QUANTILES,
) -> Vocabulary:
    """Build the shared vocabulary from the anchor and the sites' DP releases."""
    counts = merged_counts(anchor_counts, site_releases)
    grid, pooled = pooled_histograms(site_histograms)
    edges: dict[str, list[float]] = {}
    for code, values in (anchor_values or {}).items():
        if len(values) >= min_anchor_values:
            edges[code] = quantile_edges(values, n_bins)
    # Noise of one pooled bin, and of a code's total over all bins.
    bin_sigma = float(np.sqrt(sum(r.sigma**2 for r in site_histograms)))
    for code, hist in pooled.items():
        if code in edges:
            continue
        # The unclipped noisy total is an unbiased estimate of the number of values.
        if hist.sum() < min_anchor_values + 3.0 * bin_sigma * np.sqrt(hist.size):
            continue
        found = edges_from_histogram(hist, grid, n_bins, noise_floor=2.0 * bin_sigma)
        if found:
            edges[code] = found
    return Vocabulary.build(counts, min_count=min_count, parents=parents, bin_edges=edges)


def codes_needing_sketches(vocab: Vocabulary, anchor_values: Mapping[str, np.ndarray],
                           min_anchor_values: int = 20,
                           numeric_prefixes: tuple[str, ...] = ("LOINC/", "PRO//")) -> list[str]:
    """Kept numeric code tokens the anchor has too few values of: what sites sketch next.

    Which codes carry values is not known to the server without another release,
    so it is decided by prefix (standard lab codes and PROs by default).
    """
    return [t for t in vocab.tokens
            if t.startswith(numeric_prefixes) and len(anchor_values.get(t, ())) < min_anchor_values]


def vocabulary_from_public(events: pl.DataFrame | pl.LazyFrame, *, min_count: float,
                           parents: Mapping[str, Iterable[str]] | None = None,
                           min_anchor_values: int = 20) -> Vocabulary:
    """A vocabulary from public (or already released) mapped events alone."""
    return merge_vocabulary(anchor_counts=exact_code_counts(events), min_count=min_count,
                            parents=parents, anchor_values=exact_values(events),
                            min_anchor_values=min_anchor_values)
