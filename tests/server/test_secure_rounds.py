"""SecAgg+ settings of secure rounds: derived defaults, overflow safety, quantization error."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from flwr.common.secure_aggregation.quantization import dequantize, quantize

from fedehr.server.config import load_federation_config
from fedehr.server.secure_rounds import (
    MODULUS_RANGE,
    apply_mean_update,
    fit_config,
    quantization_range,
    secagg_params,
    weights_known_at_start,
)
from fedehr.shared import messages as M
from fedehr.shared.errors import ConfigError


def _config(tmp_path, **extra):
    raw = {"name": "t", "workdir": "w", "superlink": {"insecure": True},
           "sites": ["a", "b", "c"], "min_sites": 3, "secure_aggregation": True,
           "local": {"steps": 30, "lr": 1e-3}, **extra}
    path = tmp_path / "federation.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_federation_config(path)


@pytest.mark.parametrize("sites", range(1, 70))
def test_the_sum_of_every_site_at_the_top_of_the_range_cannot_wrap_the_modulus(sites):
    q = quantization_range(sites)
    assert q & (q - 1) == 0 and q <= 2**30  # Flower's stochastic rounding casts to int32
    assert sites * q < MODULUS_RANGE
    assert 2 * q * sites >= MODULUS_RANGE or q == 2**30  # and no coarser than needed


def test_derived_defaults_hold_an_adamw_update_and_take_a_majority_of_shares(tmp_path):
    params = secagg_params(_config(tmp_path), sites=3)
    assert params.clipping_range == pytest.approx(4 * 1e-3 * 30)
    assert params.num_shares == 1.0  # every site
    assert params.reconstruction_threshold == 2
    assert params.quantization_range == 2**30
    assert secagg_params(_config(tmp_path), sites=7).reconstruction_threshold == 4


def test_max_weight_follows_the_sizes_the_sites_reported_in_the_previous_round(tmp_path):
    cfg = _config(tmp_path)
    assert secagg_params(cfg, 3).max_weight == 1_000_000  # nothing reported yet
    assert secagg_params(cfg, 3, [90.0, 210.0, 150.0]).max_weight == 512  # >= 2 x 210
    fixed = _config(tmp_path, secagg={"max_weight": 5000})
    assert secagg_params(fixed, 3, [90.0]).max_weight == 5000


def test_sites_that_keep_their_counts_private_get_a_first_round_range_of_their_weight_1(
        tmp_path):
    cfg, sites = _config(tmp_path), ["a", "b", "c"]
    private = weights_known_at_start({"a": 0.0, "b": 0.0, "c": 0.0}, sites)
    assert secagg_params(cfg, 3, private).max_weight == 2  # not 1,000,000: 10^6 finer steps
    # one site publishing its count, or one listed site not heard from: sizes unknown
    assert weights_known_at_start({"a": 0.0, "b": 1.0, "c": 0.0}, sites) == []
    assert weights_known_at_start({"a": 0.0, "b": 0.0}, sites) == []


def test_explicit_settings_are_used(tmp_path):
    cfg = _config(tmp_path, secagg={"num_shares": 5, "reconstruction_threshold": 3,
                                    "clipping_range": 0.5, "max_weight": 5000})
    params = secagg_params(cfg, sites=9)
    assert (params.num_shares, params.reconstruction_threshold) == (5, 3)
    assert (params.clipping_range, params.max_weight) == (0.5, 5000)


def test_fedprox_sends_its_proximal_term_to_the_sites(tmp_path):
    cfg = _config(tmp_path, strategy={"name": "fedprox", "proximal_mu": 0.05})
    config = fit_config({M.ROUND_ID: "t/round-1"}, ["w"], secagg_params(cfg, 3), cfg)
    assert config[M.PROXIMAL_MU] == 0.05 and config[M.ARRAY_NAMES] == '["w"]'
    plain = _config(tmp_path)
    assert M.PROXIMAL_MU not in fit_config({}, ["w"], secagg_params(plain, 3), plain)


@pytest.mark.parametrize("strategy", ["median", "trimmed_mean", "fedadam"])
def test_strategies_that_need_individual_updates_are_refused(tmp_path, strategy):
    with pytest.raises(ConfigError, match="secure_aggregation"):
        _config(tmp_path, strategy={"name": strategy})


def test_a_threshold_at_or_above_the_shares_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="reconstruction_threshold"):
        _config(tmp_path, secagg={"num_shares": 3, "reconstruction_threshold": 3})


def test_the_mean_update_is_added_in_float64_and_keeps_the_dtype():
    ref = {"w": np.array([1.0, 2.0], dtype=np.float32)}
    out = apply_mean_update(ref, [np.array([1e-8, -0.5])])
    assert out["w"].dtype == np.float32
    assert out["w"].tolist() == [1.0, 1.5]


def _secagg_roundtrip(values: np.ndarray, clip: float, q: int, ratio: float) -> np.ndarray:
    """SecAgg+'s arithmetic for one site (masks cancel exactly and are left out)."""
    (quantized,) = quantize([values * ratio], clip, q)
    (back,) = dequantize([quantized], clip, q)
    return back / ratio


def test_updates_quantize_far_more_finely_than_weights():
    rng = np.random.default_rng(0)
    weights = rng.normal(0, 1, 200_000)  # a transformer's weights: embeddings ~ N(0, 1)
    update = rng.normal(0, 1e-3, 200_000).clip(-0.03, 0.03)  # 30 AdamW steps at lr 1e-3
    q, ratio = quantization_range(3), 300 / 1024  # 300 patients, derived max_weight 1024
    weights_clip = float(np.abs(weights).max() * ratio)  # no weight may be clipped
    update_clip = 4 * 1e-3 * 30 * ratio
    weights_err = np.abs(_secagg_roundtrip(weights, weights_clip, q, ratio) - weights).max()
    update_err = np.abs(_secagg_roundtrip(update, update_clip, q, ratio) - update).max()
    assert update_err < 1e-9  # far below float32 resolution of a weight near 1 (6e-8)
    assert weights_err > 20 * update_err  # the range of the weights is ~40x wider
