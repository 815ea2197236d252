"""Small random batches in the token-batch contract, with right padding."""

from __future__ import annotations

import pytest
import torch

from fedehr.shared.model import ModelConfig
from fedehr.shared.tokenizer.batch import PAD_ID, Batch

VOCAB = 50


def tiny_config(**overrides) -> ModelConfig:
    """A model small enough for exact per-example checks on CPU."""
    values = dict(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, max_len=32,
                  dropout=0.0, note_dim=6, image_dim=4, pro_dim=5, contrastive_weight=0.5,
                  contrastive_dim=8, contrastive_negatives=3)
    values.update(overrides)
    return ModelConfig(**values)


def random_batch(config: ModelConfig, lengths: list[int], T: int, seed: int = 0) -> Batch:
    """Right-padded batch; notes/images at a few positions; the last row has no PROs."""
    g = torch.Generator().manual_seed(seed)
    B = len(lengths)
    tokens = torch.randint(1, config.vocab_size, (B, T), generator=g)
    times = torch.rand(B, T, generator=g).mul(30).cumsum(1)
    valid = torch.arange(T).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    tokens = tokens.masked_fill(~valid, PAD_ID)
    times = times.masked_fill(~valid, 0.0)
    times[:, 0] = 0.0
    events = (torch.rand(B, T, 1, generator=g) < 0.3) & valid.unsqueeze(-1)
    note = torch.randn(B, T, config.note_dim, generator=g) * events
    image = torch.randn(B, T, config.image_dim, generator=g) * events
    pro = torch.randn(B, config.pro_dim, generator=g)
    pro_mask = torch.ones(B)
    pro_mask[-1] = 0.0
    return Batch(tokens, times, note, image, pro, pro_mask)


@pytest.fixture
def config() -> ModelConfig:
    return tiny_config()


@pytest.fixture
def make_batch():
    return random_batch


@pytest.fixture
def make_config():
    return tiny_config
