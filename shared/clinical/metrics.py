"""Discrimination and calibration of binary risk predictions.

AUROC and AUPRC (average precision) are scikit-learn's. Calibration is the
expected calibration error over equal-width probability bins (Naeini et al.,
2015; Guo et al., 2017): the bin-size-weighted mean of |observed rate - mean
predicted probability|, and the reliability curve is the same bins' points.
A metric that is undefined on the data (one class only) is NaN, not an error:
a small held-out split of a rare outcome can have no positives.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Reliability:
    """Per non-empty bin: mean predicted probability, observed positive rate, count."""

    predicted: list[float]
    observed: list[float]
    counts: list[int]


@dataclass(frozen=True)
class Scores:
    n: int
    positives: int
    auroc: float
    auprc: float
    ece: float
    brier: float

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in asdict(self).items()}


def _arrays(y_true, y_prob) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(bool).ravel()
    p = np.asarray(y_prob, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"{y.shape[0]} labels but {p.shape[0]} probabilities")
    return y, p


def auroc(y_true, y_prob) -> float:
    from sklearn.metrics import roc_auc_score

    y, p = _arrays(y_true, y_prob)
    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")


def auprc(y_true, y_prob) -> float:
    from sklearn.metrics import average_precision_score

    y, p = _arrays(y_true, y_prob)
    return float(average_precision_score(y, p)) if 0 < y.sum() < len(y) else float("nan")


def reliability(y_true, y_prob, bins: int = 10) -> Reliability:
    y, p = _arrays(y_true, y_prob)
    which = np.minimum((np.clip(p, 0.0, 1.0) * bins).astype(int), bins - 1)
    counts = np.bincount(which, minlength=bins)
    pred = np.bincount(which, weights=p, minlength=bins)
    obs = np.bincount(which, weights=y.astype(float), minlength=bins)
    full = counts > 0
    return Reliability(predicted=(pred[full] / counts[full]).tolist(),
                       observed=(obs[full] / counts[full]).tolist(),
                       counts=counts[full].astype(int).tolist())


def ece(y_true, y_prob, bins: int = 10) -> float:
    y, _ = _arrays(y_true, y_prob)
    if len(y) == 0:
        return float("nan")
    curve = reliability(y_true, y_prob, bins)
    gaps = np.abs(np.array(curve.observed) - np.array(curve.predicted))
    return float((gaps * np.array(curve.counts)).sum() / len(y))


def roc_points(y_true, y_prob) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) for a ROC plot; empty with one class."""
    from sklearn.metrics import roc_curve

    y, p = _arrays(y_true, y_prob)
    if not 0 < y.sum() < len(y):
        return np.zeros(0), np.zeros(0)
    fpr, tpr, _ = roc_curve(y, p)
    return fpr, tpr


def score(y_true, y_prob, bins: int = 10) -> Scores:
    y, p = _arrays(y_true, y_prob)
    brier = float(np.mean((p - y) ** 2)) if len(y) else float("nan")
    return Scores(n=int(len(y)), positives=int(y.sum()), auroc=auroc(y, p), auprc=auprc(y, p),
                  ece=ece(y, p, bins), brier=brier)
