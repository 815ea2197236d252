"""Metrics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedehr.shared.clinical.metrics import auprc, auroc, ece, reliability, score

Y = [0, 0, 1, 1]
P = [0.1, 0.4, 0.35, 0.8]


def test_auroc_counts_correctly_ordered_pairs():
    # pairs (pos, neg): (0.35, 0.1) ok, (0.35, 0.4) wrong, (0.8, *) ok -> 3 of 4
    assert auroc(Y, P) == pytest.approx(0.75)
    assert auroc([0, 1], [0.2, 0.9]) == 1.0
    assert auroc([0, 1], [0.9, 0.2]) == 0.0


def test_auprc_is_average_precision():
    # ranked: 0.8 (pos) precision 1 at recall .5; 0.4 (neg); 0.35 (pos) precision 2/3 at 1.0
    assert auprc(Y, P) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_ece_weights_each_bins_gap_by_its_size():
    y = [1, 0, 0, 0, 0, 1, 1, 0, 0]
    p = [0.2] * 5 + [0.9] * 4  # bin 0.2: observed 0.2 (gap 0); bin 0.9: observed 0.5 (gap 0.4)
    assert ece(y, p) == pytest.approx(4 / 9 * 0.4)
    curve = reliability(y, p)
    assert curve.counts == [5, 4]
    assert curve.predicted == pytest.approx([0.2, 0.9])
    assert curve.observed == pytest.approx([0.2, 0.5])


def test_a_calibrated_predictor_has_small_ece():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=20000)
    y = rng.uniform(size=p.size) < p
    assert ece(y, p) < 0.02
    assert ece(y, np.clip(p + 0.3, 0, 1)) > 0.2


def test_one_class_gives_nan_not_an_error():
    s = score([0, 0, 0], [0.1, 0.2, 0.3])
    assert math.isnan(s.auroc) and math.isnan(s.auprc)
    assert s.to_dict()["auroc"] is None
    assert s.brier == pytest.approx((0.01 + 0.04 + 0.09) / 3)
