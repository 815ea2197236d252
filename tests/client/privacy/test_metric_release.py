"""A noised held-out loss: clipped per patient, Gaussian-noised, one charge at sample rate 1."""

from __future__ import annotations

import numpy as np
import pytest

from fedehr.client.privacy.metric_release import noised_mean_loss
from fedehr.client.privacy.noise import fresh_key, numpy_generator


def _release(losses, **kw):
    return noised_mean_loss(np.asarray(losses, dtype=float), bound=kw.pop("bound", 10.0),
                            noise_multiplier=kw.pop("noise_multiplier", 1.0),
                            rng=numpy_generator(fresh_key(), "metrics"))


def test_a_noised_mean_is_close_to_the_true_mean_for_many_patients():
    assert _release(np.full(2000, 3.0)).mean == pytest.approx(3.0, abs=0.1)


def test_one_patient_with_a_huge_loss_moves_the_mean_at_most_by_the_bound():
    release = _release([1e9], noise_multiplier=1e-6)  # almost no noise: clipping shows
    assert release.mean == pytest.approx(10.0, abs=1e-3)  # noise std 1e-5: clipping, not noise


def test_the_release_costs_one_gaussian_step_at_its_noise_multiplier():
    charge = _release([1.0, 2.0], noise_multiplier=4.0).charge
    assert (charge.noise_multiplier, charge.sample_rate, charge.steps) == (4.0, 1.0, 1)
