"""Checks every site update before it may be aggregated.

An update is rejected, logged and left out, never aggregated, when its
arrays do not match the global model's names and shapes, hold a NaN or an
infinity, or move the model further than the configured L2 bound (a crude
but effective guard against a broken or hostile site).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    reason: str = ""
    update_norm: float = 0.0


def screen_update(global_arrays: dict[str, np.ndarray], site_arrays: dict[str, np.ndarray],
                  max_update_norm: float) -> Verdict:
    if set(site_arrays) != set(global_arrays):
        missing = sorted(set(global_arrays) - set(site_arrays))[:3]
        extra = sorted(set(site_arrays) - set(global_arrays))[:3]
        return Verdict(False, f"parameter names differ (missing {missing}, unexpected {extra})")
    total = 0.0
    for name, ref in global_arrays.items():
        arr = site_arrays[name]
        if arr.shape != ref.shape:
            return Verdict(False, f"{name} has shape {arr.shape}, expected {ref.shape}")
        if not np.isfinite(arr).all():
            return Verdict(False, f"{name} holds NaN or infinite values")
        total += _squared_distance(arr, ref)
    norm = total ** 0.5
    if not np.isfinite(norm) or norm > max_update_norm:
        return Verdict(False, f"update norm {norm:.3g} exceeds the bound {max_update_norm:g}",
                       norm)
    return Verdict(True, update_norm=norm)


CHUNK = 1 << 16  # elements: float64 temporaries of 0.5 MB, whatever the array's size


def _squared_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b||^2 in float64, chunk by chunk, so that the server holds no float64 copy
    of a whole update array (it streams a hundred sites' updates through here)."""
    a, b = a.reshape(-1), b.reshape(-1)
    total = 0.0
    for lo in range(0, a.size, CHUNK):
        diff = a[lo:lo + CHUNK].astype(np.float64) - b[lo:lo + CHUNK]
        total += float(np.dot(diff, diff))
    return total
