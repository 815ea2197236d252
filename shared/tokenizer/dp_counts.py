"""Differentially private release of a site's code counts and value sketches.

The vocabulary round is a release of private data, charged to the same privacy
ledger as DP-SGD (DESIGN.md). Both releases are Gaussian mechanisms, made at
the site by `fedehr.client.privacy.count_release`; this module holds what the
server needs too: the release message types (`CountRelease`,
`HistogramRelease`, each with the `GaussianCharge` the site's ledger paid),
the public value grid (`log_grid`) and the post-processing of a noisy
histogram into quantile edges (`edges_from_histogram`).

Each release states what the ledger must charge (`GaussianCharge`): the noise
multiplier sigma / sensitivity, sample rate 1 and one step, i.e. opacus'
``RDPAccountant.step(noise_multiplier=..., sample_rate=1.0)`` once per release.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class GaussianCharge:
    """What one release costs, in the accountant's terms."""

    noise_multiplier: float
    sample_rate: float = 1.0
    steps: int = 1
    extra_delta: float = 0.0  # partition selection (open-domain counts), add to delta

    def to_dict(self) -> dict:
        return {"noise_multiplier": self.noise_multiplier, "sample_rate": self.sample_rate,
                "steps": self.steps, "extra_delta": self.extra_delta}


@dataclass
class CountRelease:
    """Noisy patient counts per code, with the parameters that produced them."""

    counts: dict[str, float]
    k: int
    sigma: float
    threshold: float
    open_domain: bool
    charge: GaussianCharge

    @property
    def sensitivity(self) -> float:
        return math.sqrt(self.k)

    @property
    def noise_multiplier(self) -> float:
        return self.charge.noise_multiplier

    def to_dict(self) -> dict:
        return {"counts": dict(sorted(self.counts.items())), "k": self.k, "sigma": self.sigma,
                "threshold": self.threshold, "open_domain": self.open_domain,
                "charge": self.charge.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping) -> CountRelease:
        return cls(counts={str(c): float(n) for c, n in data["counts"].items()}, k=int(data["k"]),
                   sigma=float(data["sigma"]), threshold=float(data["threshold"]),
                   open_domain=bool(data["open_domain"]), charge=GaussianCharge(**data["charge"]))


@dataclass
class HistogramRelease:
    """Noisy per-code value histograms over a public grid (len(grid) + 1 bins each)."""

    grid: np.ndarray
    histograms: dict[str, np.ndarray] = field(default_factory=dict)
    k: int = 1
    sigma: float = 0.0
    charge: GaussianCharge | None = None

    def to_dict(self) -> dict:
        return {"grid": self.grid.tolist(), "k": self.k, "sigma": self.sigma,
                "histograms": {c: h.tolist() for c, h in sorted(self.histograms.items())},
                "charge": self.charge.to_dict() if self.charge else None}

    @classmethod
    def from_dict(cls, data: Mapping) -> HistogramRelease:
        return cls(grid=np.asarray(data["grid"], dtype=np.float64),
                   histograms={c: np.asarray(h, dtype=np.float64)
                               for c, h in data["histograms"].items()},
                   k=int(data["k"]), sigma=float(data["sigma"]),
                   charge=GaussianCharge(**data["charge"]) if data["charge"] else None)


def log_grid(lo: float = 1e-3, hi: float = 1e6, per_decade: int = 24) -> np.ndarray:
    """A public, data-independent grid of candidate edges: 0 and +-log-spaced values."""
    n = int(round(math.log10(hi / lo) * per_decade)) + 1
    pos = np.geomspace(lo, hi, n)
    return np.concatenate([-pos[::-1], [0.0], pos])


def edges_from_histogram(hist: np.ndarray, grid: np.ndarray, n_bins: int = 10,
                         noise_floor: float = 0.0) -> list[float]:
    """The n_bins-1 quantile edges of a (noisy) histogram over `grid` (len(grid)+1 bins).

    Bins under `noise_floor` (e.g. 2 sigma) are zeroed, so that noise spread over
    hundreds of empty bins does not drag the quantiles across the grid; within a
    bin the quantile is interpolated linearly; the open under/overflow bins clamp
    to the grid's ends. Post-processing only: it costs no privacy.
    """
    h = np.asarray(hist, dtype=np.float64)
    h = np.where(h >= max(noise_floor, 0.0), np.clip(h, 0.0, None), 0.0)
    total = h.sum()
    if total <= 0:
        return []
    cdf = np.cumsum(h) / total
    grid = np.asarray(grid, dtype=np.float64)
    edges = []
    for q in np.arange(1, n_bins) / n_bins:
        b = int(np.searchsorted(cdf, q, side="left"))
        b = min(b, len(h) - 1)
        if b == 0:
            edges.append(float(grid[0]))
        elif b >= len(grid):
            edges.append(float(grid[-1]))
        else:
            below = cdf[b - 1]
            frac = (q - below) / max(cdf[b] - below, 1e-12)
            edges.append(float(grid[b - 1] + frac * (grid[b] - grid[b - 1])))
    return edges
