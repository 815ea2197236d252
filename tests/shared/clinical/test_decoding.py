"""The KV-cached decoder computes exactly EHRModel.forward's next-token logits."""

from __future__ import annotations

import torch

from fedehr.shared.clinical.decoding import Decoder
from fedehr.shared.model import EHRModel, ModelConfig
from fedehr.shared.tokenizer.batch import PAD_ID


def test_prefill_and_steps_match_the_full_forward():
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=40, d_model=32, n_layers=2, n_heads=4, max_len=24,
                         dropout=0.0, note_dim=0, image_dim=0, pro_dim=0)
    model = EHRModel(config).eval()
    lengths = torch.tensor([5, 9, 2])
    tokens = torch.randint(1, 40, (3, 16))
    times = torch.rand(3, 16).cumsum(1)
    for b, n in enumerate(lengths.tolist()):
        tokens[b, n:], times[b, n:] = PAD_ID, 0.0
    decoder = Decoder(model, 3)
    logits = decoder.prefill(torch.arange(3), tokens[:, :9], times[:, :9], lengths)
    with torch.no_grad():
        full = model.logits(model(tokens, times))
    assert torch.allclose(logits, full[torch.arange(3), lengths - 1], atol=1e-5)
    # two steps for rows 0 and 2 only (rows of different lengths step together)
    rows = torch.tensor([0, 2])
    for _ in range(2):
        new = torch.randint(1, 40, (2,))
        at = lengths[rows]
        new_times = times[rows, at - 1] + 0.25
        stepped = decoder.step(rows, new, new_times)
        tokens[rows, at], times[rows, at] = new, new_times
        lengths[rows] += 1
        with torch.no_grad():
            full = model.logits(model(tokens, times))
        assert torch.allclose(stepped, full[rows, lengths[rows] - 1], atol=1e-5)
