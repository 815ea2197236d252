"""`ModelConfig`: every number that shapes the EHR transformer, in one dataclass.

The config travels with every checkpoint (the model card holds `to_dict()`), so
a server and its sites always build the same architecture. Presets name the
three sizes the project uses:

    tiny   ~1M parameters at a 4k vocabulary: tests and the CPU demo
    small  ~7M parameters: CPU sites, quick experiments
    base   ~92M parameters (~99M at an 8k vocabulary): GPU sites

A modality is switched off by setting its dimension to 0 (`note_dim`,
`image_dim`, `pro_dim`); the model then builds no parameters for it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from fedehr.shared.errors import ConfigError

# Vocabulary size used to quote preset parameter counts; a real run passes the
# size of the shared vocabulary.
REFERENCE_VOCAB_SIZE = 4096


@dataclass
class ModelConfig:
    vocab_size: int
    d_model: int = 96
    n_layers: int = 2
    n_heads: int = 4
    max_len: int = 256
    dropout: float = 0.0
    mlp_ratio: int = 4
    note_dim: int = 384  # frozen note-encoder width (MiniLM-L6); 0 = notes off
    image_dim: int = 32  # image-study embedding width; 0 = images off
    pro_dim: int = 0  # number of PRO scores per patient; 0 = PROs off
    contrastive_weight: float = 0.1  # weight of the EHR<->PRO term in the loss
    contrastive_dim: int = 64  # width of the shared EHR/PRO embedding space
    contrastive_negatives: int = 16  # negatives drawn per example from N(0, I)
    contrastive_temperature: float = 0.1

    def __post_init__(self) -> None:
        where = "model config"
        positive = ("vocab_size", "d_model", "n_layers", "n_heads", "max_len", "mlp_ratio",
                    "contrastive_dim", "contrastive_negatives")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}",
                                  where=where, fix=f"set {name} to a positive integer")
        for name in ("note_dim", "image_dim", "pro_dim"):
            if int(getattr(self, name)) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}",
                                  where=where, fix=f"set {name} to 0 to switch it off")
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model={self.d_model} is not divisible by "
                              f"n_heads={self.n_heads}", where=where,
                              fix="choose n_heads that divides d_model")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}",
                              where=where, fix="use e.g. 0.0 or 0.1")
        if self.contrastive_weight < 0 or self.contrastive_temperature <= 0:
            raise ConfigError("contrastive_weight must be >= 0 and contrastive_temperature > 0",
                              where=where, fix="use e.g. 0.1 and 0.1")

    # -- presets ---------------------------------------------------------------

    @classmethod
    def preset(cls, name: str, vocab_size: int, **overrides: Any) -> ModelConfig:
        """The named preset (`tiny`, `small`, `base`) with `overrides` applied."""
        if name not in PRESETS:
            raise ConfigError(f"unknown model preset {name!r}", where="model config",
                              fix=f"use one of {', '.join(PRESETS)}")
        return cls(vocab_size=vocab_size, **{**PRESETS[name], **overrides})

    @classmethod
    def tiny(cls, vocab_size: int = REFERENCE_VOCAB_SIZE, **overrides: Any) -> ModelConfig:
        return cls.preset("tiny", vocab_size, **overrides)

    @classmethod
    def small(cls, vocab_size: int = REFERENCE_VOCAB_SIZE, **overrides: Any) -> ModelConfig:
        return cls.preset("small", vocab_size, **overrides)

    @classmethod
    def base(cls, vocab_size: int = REFERENCE_VOCAB_SIZE, **overrides: Any) -> ModelConfig:
        return cls.preset("base", vocab_size, **overrides)

    # -- model card ------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (ints, floats) for the checkpoint's model card."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of `to_dict`; unknown keys are an error, missing ones take defaults."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"unknown model config keys {unknown}", where="model card",
                              fix="use a checkpoint written by a compatible fedehr version")
        if "vocab_size" not in data:
            raise ConfigError("missing vocab_size", where="model card",
                              fix="the model card must record the vocabulary size")
        values = {}
        for name, value in data.items():
            kind = known[name].type
            values[name] = float(value) if kind == "float" else int(value)
        return cls(**values)


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(d_model=96, n_layers=2, n_heads=4, max_len=256, dropout=0.0),
    "small": dict(d_model=256, n_layers=6, n_heads=8, max_len=512, dropout=0.1),
    "base": dict(d_model=768, n_layers=12, n_heads=12, max_len=1024, dropout=0.1,
                 contrastive_dim=128),
}
