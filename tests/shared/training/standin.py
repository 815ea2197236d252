"""A stand-in for the fedehr EHRModel and token dataset, small enough for unit tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from fedehr.shared.tokenizer.batch import PAD_ID, Batch

VOCAB = 16


class TinyLM(nn.Module):
    """Embedding -> LayerNorm -> Linear next-token model with `per_example_loss`."""

    def __init__(self, vocab: int = VOCAB, d: int = 8):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)

    def per_example_loss(self, batch: Batch) -> torch.Tensor:
        # contiguous: Opacus' ghost norm for nn.Embedding views its input ids
        inputs, targets = batch.tokens[:, :-1].contiguous(), batch.tokens[:, 1:]
        logits = self.head(self.norm(self.emb(inputs)))
        ce = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none",
                             ignore_index=PAD_ID)
        mask = (targets != PAD_ID).float()
        return (ce * mask).sum(1) / mask.sum(1).clamp(min=1)


def token_dataset(n: int = 64, length: int = 12, seed: int = 0) -> TensorDataset:
    """`n` windows in the Batch field order, with a learnable pattern (t+1 follows t)."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(1, VOCAB, (n, 1), generator=g)
    tokens = (start + torch.arange(length)) % (VOCAB - 1) + 1
    tokens[: n // 4, -3:] = PAD_ID  # some padding
    return TensorDataset(tokens, torch.zeros(n, length), torch.zeros(n, length, 0),
                         torch.zeros(n, length, 0), torch.zeros(n, 0), torch.zeros(n))
