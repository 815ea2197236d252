"""A forward with a KV cache computes exactly the full forward's hidden states."""

from __future__ import annotations

import torch

from fedehr.shared.model import EHRModel, ModelConfig
from fedehr.shared.model.transformer import KVCache, last_position
from fedehr.shared.tokenizer.batch import PAD_ID


def _model() -> EHRModel:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=40, d_model=32, n_layers=2, n_heads=4, max_len=24,
                         dropout=0.0, note_dim=0, image_dim=0, pro_dim=0)
    return EHRModel(config).eval()


def _prompts(lengths: list[int], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(1, 40, (len(lengths), width))
    times = torch.rand(len(lengths), width).cumsum(1)
    for b, n in enumerate(lengths):
        tokens[b, n:], times[b, n:] = PAD_ID, 0.0
    return tokens, times


@torch.no_grad()
def test_prefill_then_steps_match_the_full_forward():
    model = _model()
    lengths = torch.tensor([5, 9, 2])
    tokens, times = _prompts(lengths.tolist(), 16)
    cache = KVCache(model.config, 3)
    hidden = model(tokens[:, :9], times[:, :9], cache=cache)
    full = model(tokens, times)
    torch.testing.assert_close(last_position(hidden, tokens[:, :9]),
                               full[torch.arange(3), lengths - 1], atol=1e-5, rtol=0)
    assert cache.length.tolist() == [5, 9, 2]
    rows = torch.tensor([0, 2])  # rows of different lengths step together; row 1 waits
    for _ in range(2):
        at = lengths[rows]
        new, new_times = torch.randint(1, 40, (2,)), times[rows, at - 1] + 0.25
        stepped = model(new.unsqueeze(1), new_times.unsqueeze(1), cache=cache, rows=rows)
        tokens[rows, at], times[rows, at] = new, new_times
        lengths[rows] += 1
        full = model(tokens, times)
        torch.testing.assert_close(stepped[:, 0], full[rows, lengths[rows] - 1], atol=1e-5,
                                   rtol=0)


@torch.no_grad()
def test_a_reset_row_is_refilled_from_scratch():
    model = _model()
    tokens, times = _prompts([6, 6], 6)
    cache = KVCache(model.config, 2)
    model(tokens, times, cache=cache)
    cache.reset(torch.tensor([1]))
    shorter, shorter_times = tokens[1:, 2:], times[1:, 2:] - times[1, 2]
    refilled = model(shorter, shorter_times, cache=cache, rows=torch.tensor([1]))
    torch.testing.assert_close(refilled, model(shorter, shorter_times), atol=1e-5, rtol=0)
    assert cache.length.tolist() == [6, 4]


@torch.no_grad()
def test_a_model_with_notes_decodes_without_note_vectors_as_zeros():
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=40, d_model=32, n_layers=1, n_heads=4, max_len=16,
                         dropout=0.0, note_dim=8, image_dim=4, pro_dim=0)
    model = EHRModel(config).eval()
    tokens, times = _prompts([5], 5)
    cached = model(tokens, times, cache=KVCache(config, 1))
    full = model(tokens, times, torch.zeros(1, 5, 8), torch.zeros(1, 5, 4))
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=0)
