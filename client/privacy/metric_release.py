"""A noised, charged held-out loss: what a site sends with ``release_metrics: noised``.

An exact loss on a site's patients, for any weights the server sends, is a
membership test (a crafted model makes one patient's loss stand out). The
noised release bounds and noises it like any other count release:

- each patient's loss is clipped to ``[0, bound]`` and scaled to ``[0, 1]``;
- the release is the pair (sum of scaled losses, number of patients); adding
  or removing a patient moves each coordinate by at most 1, so the pair's L2
  sensitivity is sqrt(2);
- Gaussian noise of std ``noise_multiplier * sqrt(2)`` is added to both
  coordinates (from the site's keyed generator, four Gaussians per value), so
  the ledger charges one step of the Gaussian mechanism at sample rate 1 with
  that noise multiplier, as for the vocabulary release;
- the mean is post-processing: ``bound * clip(noisy_sum / noisy_count, 0, 1)``.

The noisy count is not sent (it would be a second use of the same release for
a different purpose, which is free, but FedAvg weights stay equal unless the
site declares its counts public).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedehr.client.privacy.noise import secure_normal
from fedehr.shared.errors import ConfigError
from fedehr.shared.tokenizer.dp_counts import GaussianCharge

SENSITIVITY = math.sqrt(2.0)


@dataclass(frozen=True)
class NoisedMean:
    mean: float
    charge: GaussianCharge


def noised_mean_loss(losses: np.ndarray, *, bound: float, noise_multiplier: float,
                     rng: np.random.Generator) -> NoisedMean:
    """The clipped, Gaussian-noised mean of per-patient `losses` and what it costs."""
    if not (bound > 0 and noise_multiplier > 0):
        raise ConfigError(f"a noised loss needs a positive bound and noise multiplier "
                          f"(got {bound}, {noise_multiplier})", where="site.yaml privacy",
                          fix="set metric_loss_bound and metric_noise_multiplier > 0")
    scaled = np.clip(np.asarray(losses, dtype=np.float64), 0.0, bound) / bound
    noise = secure_normal(rng, noise_multiplier * SENSITIVITY, (2,))
    total, count = scaled.sum() + noise[0], len(scaled) + noise[1]
    mean = bound * float(np.clip(total / max(count, 1.0), 0.0, 1.0))
    return NoisedMean(mean=mean, charge=GaussianCharge(noise_multiplier=noise_multiplier))
