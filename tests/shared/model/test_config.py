"""ModelConfig: presets, validation and the model-card round trip."""

from __future__ import annotations

import json

import pytest
import torch

from fedehr.shared.errors import ConfigError
from fedehr.shared.model import EHRModel, ModelConfig
from fedehr.shared.model.config import REFERENCE_VOCAB_SIZE


def count_params(config: ModelConfig) -> int:
    with torch.device("meta"):  # no memory, no init cost
        return EHRModel(config).num_params()


def test_tiny_preset_has_about_one_million_parameters():
    assert 0.8e6 <= count_params(ModelConfig.tiny(REFERENCE_VOCAB_SIZE)) <= 1.3e6


def test_presets_grow_from_tiny_to_small_to_base():
    sizes = [count_params(ModelConfig.preset(n, REFERENCE_VOCAB_SIZE))
             for n in ("tiny", "small", "base")]
    assert sizes == sorted(sizes)


def test_base_preset_has_about_one_hundred_million_parameters():
    assert 85e6 <= count_params(ModelConfig.base(REFERENCE_VOCAB_SIZE)) <= 115e6


def test_config_round_trips_through_json():
    config = ModelConfig.small(vocab_size=1234, pro_dim=7, contrastive_weight=0.25)
    restored = ModelConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config


def test_unknown_model_card_key_is_a_config_error():
    card = ModelConfig.tiny(100).to_dict() | {"n_experts": 4}
    with pytest.raises(ConfigError, match="n_experts"):
        ModelConfig.from_dict(card)


def test_heads_must_divide_width():
    with pytest.raises(ConfigError, match="n_heads"):
        ModelConfig(vocab_size=10, d_model=30, n_heads=4)


def test_unknown_preset_names_the_choices():
    with pytest.raises(ConfigError, match="tiny"):
        ModelConfig.preset("huge", 100)
