"""EHRModel.generate: batched sampling with a clock, EOS, horizon and top-k."""

from __future__ import annotations

import pytest
import torch

from fedehr.shared.model import EHRModel
from fedehr.shared.tokenizer.batch import PAD_ID

EOS = 2
DAY = 3  # a time token worth one day
WEEK = 4  # a time token worth seven days
TIME_TOKENS = {DAY: 1.0, WEEK: 7.0}


def rig(model: EHRModel, logits: torch.Tensor) -> EHRModel:
    """Make every next-token distribution softmax(logits), whatever the history."""
    with torch.no_grad():
        model.ln_f.weight.zero_()
        model.ln_f.bias.zero_()
        model.ln_f.bias[0] = 1.0  # hidden state is the unit vector e0 everywhere
        model.lm_head.weight.zero_()
        model.lm_head.weight[:, 0] = logits
    return model


@pytest.fixture
def model(config):
    torch.manual_seed(0)
    return EHRModel(config).eval()


@pytest.fixture
def prompt(config, make_batch):
    return make_batch(config, [6, 3, 1], T=6)


def test_rows_stop_at_eos_and_are_padded_after_it(model, config, prompt):
    logits = torch.zeros(config.vocab_size)
    logits[EOS] = 2.0  # EOS likely but not certain
    rig(model, logits)
    out = model.generate(prompt.tokens, prompt.times, prompt.note_emb, prompt.image_emb,
                         max_new_tokens=20, eos_id=EOS, generator=torch.Generator().manual_seed(0))
    assert out.tokens.shape == out.times.shape
    for row in out.tokens:
        n = int((row != PAD_ID).sum())
        assert (row[:n] != PAD_ID).all() and (row[n:] == PAD_ID).all()
        assert (row[:n - 1] != EOS).all()  # nothing after EOS
        assert row[n - 1] == EOS or n == 20


def test_time_tokens_advance_the_clock_and_stop_past_the_horizon(model, config, prompt):
    logits = torch.full((config.vocab_size,), -50.0)
    logits[DAY] = 0.0  # always one more day
    rig(model, logits)
    out = model.generate(prompt.tokens, prompt.times, prompt.note_emb, prompt.image_emb,
                         max_new_tokens=30, time_token_days=TIME_TOKENS, eos_id=EOS,
                         horizon_days=3.5, temperature=0.0)
    lengths = (prompt.tokens != PAD_ID).sum(1)
    last_time = prompt.times[torch.arange(3), lengths - 1]
    assert (out.tokens == DAY).all() and out.tokens.shape == (3, 4)  # day 4 passes 3.5
    expected = last_time.unsqueeze(1) + torch.arange(1.0, 5.0)
    torch.testing.assert_close(out.times, expected)


def test_sampling_respects_top_k_and_never_emits_pad(model, config, prompt):
    logits = torch.linspace(3.0, 0.0, config.vocab_size)
    logits[PAD_ID] = 10.0  # the most likely id, yet never sampled
    rig(model, logits)
    out = model.generate(prompt.tokens, prompt.times, prompt.note_emb, prompt.image_emb,
                         max_new_tokens=40, top_k=4, generator=torch.Generator().manual_seed(0))
    assert out.tokens.shape == (3, 40)
    assert set(out.tokens.unique().tolist()) == {1, 2, 3, 4}  # the 4 best ids after PAD


def test_a_row_generates_the_same_alone_as_in_a_batch(model, prompt):
    kwargs = dict(max_new_tokens=8, temperature=0.0, time_token_days=TIME_TOKENS)
    together = model.generate(prompt.tokens, prompt.times, prompt.note_emb, prompt.image_emb,
                              **kwargs)
    for i in range(3):
        alone = model.generate(prompt.tokens[i:i + 1], prompt.times[i:i + 1],
                               prompt.note_emb[i:i + 1], prompt.image_emb[i:i + 1], **kwargs)
        assert torch.equal(alone.tokens, together.tokens[i:i + 1])
        torch.testing.assert_close(alone.times, together.times[i:i + 1])


def test_generation_slides_past_max_len(model, config, make_batch):
    prompt = make_batch(config, [config.max_len], T=config.max_len)
    out = model.generate(prompt.tokens, prompt.times, prompt.note_emb, prompt.image_emb,
                         max_new_tokens=5, generator=torch.Generator().manual_seed(0))
    assert out.tokens.shape == (1, 5) and (out.tokens != PAD_ID).all()
