"""The token-sequence contract between the tokenizer, the model and the trainers.

One training example is one window of one patient (the privacy unit), given
as a plain tuple of tensors in `FIELDS` order so that Opacus' data loader can
collate and Poisson-sample it (it also builds empty batches from these
shapes). `Batch` names the fields after collation.

Shapes for a batch of B windows of T tokens:
    tokens     int64   [B, T]      token ids, PAD_ID where padded
    times      float32 [B, T]      days since the window's first event (0 at BOS/pad)
    note_emb   float32 [B, T, Dn]  frozen note-encoder vector at note events, else 0
    image_emb  float32 [B, T, Di]  image-study embedding at image events, else 0
    pro        float32 [B, P]      the patient's latest PRO scores (standardised)
    pro_mask   float32 [B]         1 when the patient has PRO responses, else 0
Dn, Di or P may be 0 when that modality is switched off.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from fedehr.shared.tokenizer.vocabulary import PAD_ID

__all__ = ["PAD_ID", "Batch", "FIELDS"]

FIELDS = ("tokens", "times", "note_emb", "image_emb", "pro", "pro_mask")


class Batch(NamedTuple):
    tokens: torch.Tensor
    times: torch.Tensor
    note_emb: torch.Tensor
    image_emb: torch.Tensor
    pro: torch.Tensor
    pro_mask: torch.Tensor

    @classmethod
    def from_tuple(cls, parts) -> Batch:
        return cls(*parts)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(*(t.to(device) for t in self))
