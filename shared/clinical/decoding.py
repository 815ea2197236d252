"""Incremental decoding of `EHRModel` with cached keys and values.

`EHRModel.generate` recomputes the whole context for every new token, which
is quadratic in the context and dominates zero-shot answering (thousands of
continuations of a few hundred tokens each). `Decoder` computes the same
function incrementally: `prefill` runs the prompts once through the blocks,
keeping each layer's keys and values; `step` embeds one new token per row at
its row's next position and attends over the cache. The layers are the
model's own modules, called in the model's order (the standard KV cache of
GPT inference); tests check the logits against `EHRModel.forward`.

Rows are right-padded as everywhere in fedehr: row b holds `length[b]` cached
positions and its next token goes to position `length[b]`, so rows of
different lengths step together. Note and image projections are left out
(generated positions carry no vectors, and the prompts' are zero here).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fedehr.shared.tokenizer.batch import PAD_ID


class Decoder:
    """Key/value caches of a batch of rows for one `EHRModel` in eval mode."""

    def __init__(self, model, batch: int, dtype: torch.dtype = torch.float32):
        cfg = model.config
        self.model = model
        self.n_heads = cfg.n_heads
        self.head_dim = cfg.d_model // cfg.n_heads
        self.capacity = cfg.max_len
        shape = (batch, self.n_heads, self.capacity, self.head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype) for _ in model.blocks]
        self.values = [torch.zeros(shape, dtype=dtype) for _ in model.blocks]
        self.length = torch.zeros(batch, dtype=torch.long)

    @torch.no_grad()
    def prefill(self, rows: torch.Tensor, tokens: torch.Tensor, times: torch.Tensor,
                length: torch.Tensor) -> torch.Tensor:
        """Fill the caches of `rows` with right-padded prompts [b, T]; logits [b, V] of
        each row's last prompt position."""
        m = self.model
        b, T = tokens.shape
        positions = torch.arange(T).repeat(b, 1)
        x = m.tok_emb(tokens) + m.pos_emb(positions) + m.time_emb(times.float())
        valid = tokens != PAD_ID
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        mask = ((causal & valid.unsqueeze(1)) | torch.eye(T, dtype=torch.bool)).unsqueeze(1)
        for layer, block in enumerate(m.blocks):
            q, k, v = self._qkv(block, x)
            self.keys[layer][rows, :, :T] = k
            self.values[layer][rows, :, :T] = v
            x = self._finish(block, x, q, k, v, mask)
        self.length[rows] = length
        last = m.ln_f(x[torch.arange(b), length - 1])
        return m.logits(last)

    @torch.no_grad()
    def step(self, rows: torch.Tensor, tokens: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        """Append one token per row (at position length[row]); logits [b, V] after it."""
        m = self.model
        pos = self.length[rows]
        if bool((pos >= self.capacity).any()):
            raise ValueError("a row's context is full; drop old events and prefill it again")
        x = (m.tok_emb(tokens) + m.pos_emb(pos) + m.time_emb(times.float().unsqueeze(1))
             .squeeze(1)).unsqueeze(1)  # [b, 1, C]
        W = int(pos.max()) + 1
        mask = (torch.arange(W).unsqueeze(0) <= pos.unsqueeze(1)).view(len(rows), 1, 1, W)
        for layer, block in enumerate(m.blocks):
            q, k, v = self._qkv(block, x)  # [b, H, 1, hd]
            self.keys[layer][rows, :, pos] = k[:, :, 0]
            self.values[layer][rows, :, pos] = v[:, :, 0]
            keys = self.keys[layer][rows, :, :W]
            values = self.values[layer][rows, :, :W]
            x = self._finish(block, x, q, keys, values, mask)
        self.length[rows] = pos + 1
        return m.logits(m.ln_f(x[:, 0]))

    def _qkv(self, block, x: torch.Tensor):
        B, T, C = x.shape
        q, k, v = block.attn.qkv(block.ln_1(x)).split(C, dim=2)
        shape = (B, T, self.n_heads, self.head_dim)
        return (q.view(shape).transpose(1, 2), k.view(shape).transpose(1, 2),
                v.view(shape).transpose(1, 2))

    @staticmethod
    def _finish(block, x, q, k, v, mask) -> torch.Tensor:
        B, T, C = x.shape
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        x = x + block.attn.out(y)
        return x + block.mlp(block.ln_2(x))
