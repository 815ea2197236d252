"""The server's screen of a site update: names, shapes, finiteness, the L2 bound, in
bounded memory."""

from __future__ import annotations

import tracemalloc

import numpy as np

from fedehr.server.screening import screen_update


def _model(size: int = 300_000) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"emb": rng.standard_normal(size).astype(np.float32),
            "bias": rng.standard_normal(7).astype(np.float32)}


def test_the_norm_is_the_l2_distance_over_every_array():
    ref = _model()
    site = {k: v + 0.01 for k, v in ref.items()}
    verdict = screen_update(ref, site, max_update_norm=1e9)
    expected = np.sqrt(sum(float(np.sum((site[k].astype(np.float64) - ref[k]) ** 2))
                           for k in ref))
    assert verdict.accepted and abs(verdict.update_norm - expected) < 1e-6 * expected


def test_bad_updates_are_refused_with_the_reason():
    ref = _model(10)
    assert "shape" in screen_update(ref, {**ref, "bias": np.zeros(3, np.float32)}, 1.0).reason
    assert "NaN" in screen_update(ref, {**ref, "bias": np.full(7, np.nan, np.float32)},
                                  1.0).reason
    assert "missing" in screen_update(ref, {"emb": ref["emb"]}, 1.0).reason
    far = {k: v + 10 for k, v in ref.items()}
    assert "exceeds the bound" in screen_update(ref, far, 1.0).reason


def test_screening_holds_no_float64_copy_of_a_large_array():
    # a float64 copy of "emb" alone would be 2.4 MB; the chunked distance needs ~1 MB
    ref = _model(300_000)
    site = {k: v + 0.01 for k, v in ref.items()}
    tracemalloc.start()
    screen_update(ref, site, max_update_norm=1e9)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1.5e6, peak
