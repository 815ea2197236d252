"""Where a site's DP noise comes from: a 256-bit secret key, never a 32-bit seed.

A Gaussian mechanism is only as private as its noise is unpredictable. A
torch CPU generator (Mersenne Twister) seeded with ``manual_seed`` keeps 32
bits of the seed, so whoever can enumerate 2^32 seeds can subtract the noise
from an update. Here:

- the key is 256 bits: fresh from `secrets` for every release, or derived
  with HMAC-SHA256 from the site's secret seed file and the release's id
  (site.yaml ``privacy.noise_seed_file``, kept for reproducibility checks);
- the noise comes from numpy's Philox4x64-10, a counter-based generator
  (Salmon, Moraes, Dror, Shaw 2011, "Parallel random numbers: as easy as
  1, 2, 3"), whose 128-bit key and 256-bit counter are both taken from the
  secret key: 384 bits of secret state;
- each Gaussian value is the sum of four independent standard normals
  divided by two, as Opacus' ``secure_mode`` does after Holohan and Braghin
  2021 ("Secure random sampling in differential privacy"), so the
  floating-point attack on one Gaussian sample (Mironov 2012; Jin et al.
  2021, "Are we there yet? Timing and floating-point attacks on differential
  privacy systems") has no single sample to invert.

Domain separation: the Poisson sampling, the DP-SGD noise and a count
release's noise each get their own key from the release key (`subkey`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

import numpy as np
import torch

KEY_BYTES = 32
# Opacus' secure_mode sums 2n Gaussians with n = 2 (see opacus.optimizers.optimizer)
GAUSSIANS_PER_VALUE = 4


def fresh_key() -> int:
    """A new 256-bit secret key, as an int (the trainers' `seed`)."""
    return secrets.randbits(8 * KEY_BYTES)


def derived_key(seed_file: Path, release_id: str) -> int:
    """The 256-bit key of one release derived from the site's secret seed file (full width)."""
    mac = hmac.new(seed_file.read_bytes(), release_id.encode(), hashlib.sha256).digest()
    return int.from_bytes(mac, "big")


def subkey(key: int, purpose: str) -> bytes:
    """A 256-bit key for one use of `key` (sampling, noise, counts): SHA-256 with a label."""
    if key < 0:
        raise ValueError("a noise key is a non-negative integer")
    width = max(KEY_BYTES, (key.bit_length() + 7) // 8)
    return hashlib.sha256(purpose.encode() + b"\0" + key.to_bytes(width, "big")).digest()


def numpy_generator(key: int, purpose: str) -> np.random.Generator:
    """A numpy Generator on Philox whose key (128 bits) and counter (256 bits) are secret."""
    material = subkey(key, purpose) + subkey(key, purpose + "/counter")
    words = np.frombuffer(material, dtype=np.uint64)
    return np.random.Generator(np.random.Philox(key=words[:2], counter=words[2:6]))


def sampling_seed(key: int) -> int:
    """A 64-bit seed for the Poisson sampler's torch generator, derived from `key`."""
    return int.from_bytes(subkey(key, "sampling")[:8], "big") >> 1


def secure_normal(rng: np.random.Generator, std: float, shape: tuple[int, ...]
                  ) -> np.ndarray:
    """`shape` draws of N(0, std^2) from `rng`, each the sum of four N(0, 1) over two."""
    if std == 0:
        return np.zeros(shape)
    draws = rng.standard_normal((GAUSSIANS_PER_VALUE, *shape))
    return draws.sum(axis=0) * (std / np.sqrt(GAUSSIANS_PER_VALUE))


class GaussianNoise:
    """Gaussian noise for DP releases, from a keyed Philox stream (see the module text)."""

    def __init__(self, key: int, purpose: str):
        self._rng = numpy_generator(key, purpose)

    def normal(self, std: float, shape: tuple[int, ...], *, dtype: np.dtype = np.float64
               ) -> np.ndarray:
        """`shape` draws of N(0, std^2): each the sum of four N(0, 1) draws, over two."""
        return secure_normal(self._rng, std, shape).astype(dtype, copy=False)

    def like(self, std: float, reference: torch.Tensor) -> torch.Tensor:
        """Noise of `reference`'s shape, dtype and device."""
        values = self.normal(std, tuple(reference.shape))
        return torch.from_numpy(values).to(device=reference.device, dtype=reference.dtype)
