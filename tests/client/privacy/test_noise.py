"""The site's noise source: 256-bit keys, Philox streams, Gaussian of the right width."""

from __future__ import annotations

import numpy as np
import pytest

from fedehr.client.privacy.noise import GaussianNoise, derived_key, fresh_key, numpy_generator


def test_noise_has_the_requested_standard_deviation_and_no_mean():
    values = GaussianNoise(fresh_key(), "dp-sgd").normal(3.0, (200_000,))
    assert values.mean() == pytest.approx(0.0, abs=0.03)
    assert values.std() == pytest.approx(3.0, rel=0.01)


def test_keys_equal_in_their_low_128_bits_give_different_streams():
    key = fresh_key()
    for other in (key + 2**64, key + 2**128):
        assert not np.array_equal(numpy_generator(key, "counts").random(8),
                                  numpy_generator(other, "counts").random(8))


def test_one_key_gives_separate_streams_per_use():
    key = fresh_key()
    assert not np.array_equal(numpy_generator(key, "counts").random(8),
                              numpy_generator(key, "dp-sgd").random(8))


def test_a_seed_file_derives_a_full_width_key_per_release(tmp_path):
    seed_file = tmp_path / "seed"
    seed_file.write_bytes(b"the site's secret")
    one, two = derived_key(seed_file, "fed/1"), derived_key(seed_file, "fed/2")
    assert one == derived_key(seed_file, "fed/1") and one != two
    assert max(one.bit_length(), two.bit_length()) > 192  # 256-bit HMAC, not 62 bits
