"""The EHR foundation model: a decoder-only transformer over patient token sequences.

Read top to bottom, as nanoGPT's model.py: time features, attention, MLP, block,
then `EHRModel` with its losses and sampler.

Input (one patient window, see `fedehr.shared.tokenizer.batch`): code, quantile
and time-interval tokens, each with its elapsed time in days. The embedding of
position t is

    tok_emb[token] + pos_emb[t] + time_proj(log1p(days), sin/cos(2 pi days / period))
        + note_proj(note_emb[t]) + image_proj(image_emb[t])

Notes and images come as frozen-encoder vectors at the positions of their
[NOTE]/[IMAGE] marker tokens and zeros elsewhere; the projections have no bias,
so they add nothing where the vector is zero.

Differential privacy shapes three decisions:

1. Opacus computes per-example gradients with hooks on nn.Linear, nn.LayerNorm
   and nn.Embedding, so the model is made of those and parameter-free functions
   (scaled_dot_product_attention, GELU) only. Every module runs once per forward,
   and the output head is not tied to the token embedding: ghost clipping computes
   one gradient norm per module and refuses (or would get wrong) shared
   parameters.
2. The loss of example i depends on example i only. Opacus bounds each example's
   influence by clipping its own gradient; any term that mixes examples
   (in-batch negatives, batch statistics) would let one patient move another
   patient's gradient and void the guarantee. Therefore the EHR<->PRO contrastive
   objective is per example: the patient's true PRO vector is scored against M
   negatives drawn for that example from a fixed, data-independent prior,
   N(0, I) in the tokenizer's standardised PRO units (or negatives the caller
   passes, e.g. drawn from public-anchor PROs, which cost no privacy), with
   InfoNCE over the 1 + M candidates, masked by `pro_mask`. The price: the
   negatives are less informative than other patients' PROs.
3. Attention masks keys that are padding; a padded query row may still attend
   to itself, so no row is fully masked and no NaN reaches the backward pass.

Sequences are right-padded with PAD_ID; positions count from the window start.

Incremental decoding (the KV cache of GPT inference) is part of the same
forward: `forward(..., cache=KVCache, rows=...)` appends the given tokens to
the cached rows at their next positions, stores each layer's keys and values
and attends over everything cached. Training, embeddings and sampling thus run
one layer loop, and a cached forward computes the same hidden states as the
full one (tests/shared/model/test_kv_cache.py).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from fedehr.shared.errors import ConfigError
from fedehr.shared.model.config import ModelConfig
from fedehr.shared.tokenizer.batch import PAD_ID, Batch

# Periods (days) of the sinusoidal elapsed-time features: day, week, month, year.
TIME_PERIODS_DAYS = (1.0, 7.0, 30.4375, 365.25)


class TimeFeatures(nn.Module):
    """Elapsed days -> d_model: log1p(days) and sin/cos at a few periods, then a Linear."""

    def __init__(self, d_model: int):
        super().__init__()
        self.proj = nn.Linear(1 + 2 * len(TIME_PERIODS_DAYS), d_model)

    def forward(self, days: torch.Tensor) -> torch.Tensor:
        days = days.clamp(min=0).unsqueeze(-1)  # [B, T, 1]
        periods = torch.tensor(TIME_PERIODS_DAYS, device=days.device, dtype=days.dtype)
        angle = 2 * math.pi * days / periods  # [B, T, n_periods]
        feats = torch.cat([torch.log1p(days), torch.sin(angle), torch.cos(angle)], dim=-1)
        return self.proj(feats)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)  # fused q, k, v
        self.out = nn.Linear(config.d_model, config.d_model)
        self.resid_drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor,
                cache: _LayerCache | None = None) -> torch.Tensor:
        # x [B, T, C]; mask [B, 1, T, S] bool, True where query t may attend to key s
        # (S = T, or with a cache the cached width)
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)  # [B, H, T, hd]
        k = k.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)
        v = v.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)
        if cache is not None:
            k, v = cache.append(k, v)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_drop(self.out(y))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(config.d_model, config.mlp_ratio * config.d_model)
        self.proj = nn.Linear(config.mlp_ratio * config.d_model, config.d_model)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.d_model)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor,
                cache: _LayerCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask, cache)
        return x + self.mlp(self.ln_2(x))


class KVCache:
    """Keys and values of every layer for `batch` rows of up to `max_len` positions.

    Row b holds `length[b]` positions; a forward with this cache appends its
    tokens at positions length[b], length[b] + 1, ... (right-padded input: the
    row's length grows by its non-pad tokens). `reset(rows)` empties rows, e.g.
    before refilling a context that dropped its oldest events.
    """

    def __init__(self, config: ModelConfig, batch: int, *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None):
        shape = (batch, config.n_heads, config.max_len, config.d_model // config.n_heads)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device)
                     for _ in range(config.n_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device)
                       for _ in range(config.n_layers)]
        self.valid = torch.zeros(batch, config.max_len, dtype=torch.bool, device=device)
        self.length = torch.zeros(batch, dtype=torch.long, device=device)
        self.capacity = config.max_len

    def reset(self, rows: torch.Tensor) -> None:
        self.length[rows] = 0
        self.valid[rows] = False


class _LayerCache:
    """One layer's view of a KVCache during one forward: where the new keys go."""

    def __init__(self, cache: KVCache, layer: int, rows: torch.Tensor, positions: torch.Tensor,
                 width: int):
        self.cache, self.layer, self.rows, self.positions, self.width = (
            cache, layer, rows, positions, width)

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v [b, H, T, hd] at the rows' positions; all cached keys, values
        [b, H, width, hd]."""
        r = self.rows.unsqueeze(1)  # [b, 1] with positions [b, T] -> [b, T, H, hd]
        self.cache.keys[self.layer][r, :, self.positions] = k.transpose(1, 2).to(
            self.cache.keys[self.layer].dtype)
        self.cache.values[self.layer][r, :, self.positions] = v.transpose(1, 2).to(
            self.cache.values[self.layer].dtype)
        return (self.cache.keys[self.layer][self.rows, :, :self.width].to(k.dtype),
                self.cache.values[self.layer][self.rows, :, :self.width].to(v.dtype))


class Generated(NamedTuple):
    """Sampled continuations, PAD_ID / 0.0 after a row stopped."""

    tokens: torch.Tensor  # int64 [B, N]
    times: torch.Tensor  # float32 [B, N], days since the window start


class EHRModel(nn.Module):
    def __init__(self, config: ModelConfig, tokens: Sequence[str] | None = None):
        """`tokens` (the vocabulary, in id order): the two vocabulary-sized matrices then
        draw each token's row from a stream of its own, so that vocabularies that differ
        in a few tokens start every shared token at the same row (see `_init_weights`)."""
        super().__init__()
        self.config = config
        if tokens is not None and len(tokens) != config.vocab_size:
            raise ConfigError(f"{len(tokens)} tokens for a model of vocab_size "
                              f"{config.vocab_size}", where="model config",
                              fix="build the model config from the same vocabulary")
        # True while Opacus' per-example hooks are attached (the DP trainer sets it): they
        # need every layer's input batch-first, so the head then runs over every position
        self.per_example_grads = False
        seed = int(torch.randint(2**62, (), device="cpu"))  # the one draw from the global stream
        with torch.random.fork_rng(devices=[]):  # the constructors' own draws are discarded
            self._build(config)
        self._init_weights(seed, tokens)

    def _build(self, config: ModelConfig) -> None:
        d = config.d_model
        self.tok_emb = nn.Embedding(config.vocab_size, d)
        self.pos_emb = nn.Embedding(config.max_len, d)
        self.time_emb = TimeFeatures(d)
        self.note_proj = nn.Linear(config.note_dim, d, bias=False) if config.note_dim else None
        self.image_proj = nn.Linear(config.image_dim, d, bias=False) if config.image_dim else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layers)])
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, config.vocab_size, bias=False)  # untied, see docstring
        if config.pro_dim:
            k = config.contrastive_dim
            self.ehr_head = nn.Linear(d, k)  # patient state -> shared space
            self.pro_encoder = nn.Sequential(  # PRO scores -> shared space
                nn.Linear(config.pro_dim, k), nn.GELU(), nn.Linear(k, k))
        else:
            self.ehr_head = self.pro_encoder = None

    def _init_weights(self, seed: int, tokens: Sequence[str] | None) -> None:
        """N(0, 0.02) weights and zero biases (GPT-2; residual projections scaled by depth),
        each module drawn from its own stream, seeded by `seed` and the module's name, and
        with `tokens` each row of `tok_emb` and `lm_head` by its token's name as well.

        So a vocabulary with a token more or less (the DP vocabulary release is unseeded)
        changes no other weight, and each shared token keeps its rows: reruns, and arms
        on different releases, start paired.
        """
        residual = 0.02 / math.sqrt(2 * self.config.n_layers)
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)) and not module.weight.is_meta:
                std = residual if name.endswith(("attn.out", "mlp.proj")) else 0.02
                if tokens is not None and name in ("tok_emb", "lm_head"):  # row by row
                    pieces = zip(module.weight, (f"{name}/{t}" for t in tokens), strict=True)
                else:
                    pieces = [(module.weight, name)]
                for weights, key in pieces:
                    stream = torch.Generator(weights.device).manual_seed(
                        seed + zlib.crc32(key.encode()))
                    nn.init.normal_(weights, mean=0.0, std=std, generator=stream)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- forward ---------------------------------------------------------------

    def forward(self, tokens: torch.Tensor, times: torch.Tensor,
                note_emb: torch.Tensor | None = None, image_emb: torch.Tensor | None = None,
                pro: torch.Tensor | None = None, pro_mask: torch.Tensor | None = None,
                *, cache: KVCache | None = None, rows: torch.Tensor | None = None,
                ) -> torch.Tensor:
        """Hidden states [B, T, d_model]. `pro`/`pro_mask` are accepted so that
        `model(*batch)` works; PROs enter the loss, not the sequence.

        With `cache` (inference), input row i continues cache row `rows[i]` (default
        0..B-1): its tokens take the next positions after the cached ones, attend to
        them, and are stored (see `KVCache`)."""
        B, T = tokens.shape
        if cache is None:
            if T > self.config.max_len:
                raise ValueError(f"sequence length {T} exceeds max_len={self.config.max_len}")
            # [B, T], contiguous: Opacus needs the batch dimension on every layer input and
            # its ghost-clipping embedding norm calls .view() on the indices
            positions = torch.arange(T, device=tokens.device).repeat(B, 1)
        else:
            rows = torch.arange(B, device=tokens.device) if rows is None else rows
            positions = cache.length[rows].unsqueeze(1) + torch.arange(T, device=tokens.device)
            if int(positions.max()) >= cache.capacity:
                raise ValueError(f"a cached row would exceed max_len={self.config.max_len}; "
                                 "reset it and feed a shorter context")
        x = self.tok_emb(tokens) + self.pos_emb(positions) + self.time_emb(times)
        # with a cache, absent note/image vectors are zeros: the projections have no bias,
        # so they add nothing (generated positions carry no vectors)
        if self.note_proj is not None and not (cache is not None and note_emb is None):
            x = x + self.note_proj(self._side_input(note_emb, "note_emb", self.config.note_dim))
        if self.image_proj is not None and not (cache is not None and image_emb is None):
            x = x + self.image_proj(self._side_input(image_emb, "image_emb",
                                                     self.config.image_dim))
        x = self.drop(x)

        valid = tokens != PAD_ID  # [B, T]
        if cache is None:
            causal = torch.ones(T, T, dtype=torch.bool, device=tokens.device).tril()
            self_only = torch.eye(T, dtype=torch.bool, device=tokens.device)
            mask = (causal & valid.unsqueeze(1)) | self_only  # [B, T(query), T(key)]
            mask = mask.unsqueeze(1)  # [B, 1, T, T], broadcast over heads
            for block in self.blocks:
                x = block(x, mask)
            return self.ln_f(x)
        # the same mask over cached keys: key s is seen by the query at position p when
        # s <= p and s holds a token, and every query sees itself
        width = int(positions.max()) + 1
        cache.valid[rows.unsqueeze(1), positions] = valid
        keys = torch.arange(width, device=tokens.device)
        seen = (keys.view(1, 1, width) <= positions.unsqueeze(2)) \
            & cache.valid[rows, :width].unsqueeze(1)
        mask = (seen | (keys.view(1, 1, width) == positions.unsqueeze(2))).unsqueeze(1)
        for layer, block in enumerate(self.blocks):
            x = block(x, mask, _LayerCache(cache, layer, rows, positions, width))
        cache.length[rows] = cache.length[rows] + valid.sum(1)
        return self.ln_f(x)

    @staticmethod
    def _side_input(emb: torch.Tensor | None, name: str, dim: int) -> torch.Tensor:
        if emb is None or emb.shape[-1] != dim:
            width = None if emb is None else emb.shape[-1]
            raise ConfigError(f"{name} has width {width} but the model expects {dim}",
                              where="model input",
                              fix=f"match the tokenizer's {name} width to the model config "
                                  f"or set it to 0 in the model config")
        return emb

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)  # [..., vocab_size]

    # -- losses ----------------------------------------------------------------

    def per_example_loss(self, batch: Batch, negatives: torch.Tensor | None = None,
                         generator: torch.Generator | None = None) -> torch.Tensor:
        """Loss of each example [B], a function of that example alone.

        Next-token cross-entropy averaged over the example's non-pad targets, plus
        contrastive_weight * the PRO InfoNCE term (when PROs are on). `negatives`
        [B, M, P] overrides the N(0, I) draws; `generator` seeds them.
        """
        batch = Batch(*batch)
        hidden = self(*batch)  # [B, T, d]
        before, targets = hidden[:, :-1], batch.tokens[:, 1:]
        counted = targets != PAD_ID
        if self.per_example_grads:
            ce = token_losses(self.lm_head(before), targets)  # [B, T-1]
        else:  # the head (half a step's work) only where a target counts: windows are
            # about a quarter padding
            ce = hidden.new_zeros(targets.shape)
            ce[counted] = token_losses(self.lm_head(before[counted]), targets[counted])
        counted = counted.to(ce.dtype)
        loss = (ce * counted).sum(1) / counted.sum(1).clamp(min=1)
        if self.pro_encoder is not None:
            nce = self.contrastive_loss(hidden, batch.tokens, batch.pro, batch.pro_mask,
                                        negatives=negatives, generator=generator)
            loss = loss + self.config.contrastive_weight * nce
        return loss

    def contrastive_loss(self, hidden: torch.Tensor, tokens: torch.Tensor, pro: torch.Tensor,
                         pro_mask: torch.Tensor, negatives: torch.Tensor | None = None,
                         generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-example InfoNCE [B]: the true PRO vector against M prior draws."""
        if self.pro_encoder is None:
            raise ConfigError("this model has no PRO head", where="model config",
                              fix="set pro_dim > 0")
        B, P = pro.shape
        if P != self.config.pro_dim:
            raise ConfigError(f"pro has width {P} but the model expects {self.config.pro_dim}",
                              where="model input", fix="match pro_dim to the tokenizer")
        if negatives is None:
            negatives = torch.randn(B, self.config.contrastive_negatives, P,
                                    generator=generator, device=pro.device, dtype=pro.dtype)
        z_ehr = F.normalize(self.ehr_head(last_position(hidden, tokens)), dim=-1)  # [B, k]
        candidates = torch.cat([pro.unsqueeze(1), negatives], dim=1)  # [B, 1+M, P]
        z_pro = F.normalize(self.pro_encoder(candidates), dim=-1)  # [B, 1+M, k]
        scores = torch.einsum("bk,bmk->bm", z_ehr, z_pro) / self.config.contrastive_temperature
        return -F.log_softmax(scores, dim=-1)[:, 0] * pro_mask.to(scores.dtype)

    @torch.no_grad()
    def embed(self, batch: Batch, pooling: str = "last") -> torch.Tensor:
        """Patient representation: the hidden state at the last non-pad position [B,
        d_model], or with pooling "last+mean" that and the mean over every non-pad
        position [B, 2 d_model]. No gradient (frozen features for probes), which also
        keeps Opacus hooks from recording a forward that has no backward."""
        batch = Batch(*batch)
        hidden = self(*batch)
        last = last_position(hidden, batch.tokens)
        if pooling == "last":
            return last
        if pooling != "last+mean":
            raise ConfigError(f"unknown pooling {pooling!r}", where="embed",
                              fix="use 'last' or 'last+mean'")
        real = (batch.tokens != PAD_ID).unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * real).sum(1) / real.sum(1).clamp(min=1)
        return torch.cat([last, mean], dim=-1)

    # -- sampling --------------------------------------------------------------

    @torch.no_grad()
    def generate(self, tokens: torch.Tensor, times: torch.Tensor,
                 note_emb: torch.Tensor | None = None, image_emb: torch.Tensor | None = None,
                 *, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 time_token_days: dict[int, float] | None = None, eos_id: int | None = None,
                 horizon_days: float | None = None,
                 generator: torch.Generator | None = None) -> Generated:
        """Sample continuations of right-padded prompts, all rows in one batch.

        A sampled time token (a key of `time_token_days`) advances that row's clock
        by its duration; every generated token carries the clock. A row stops after
        emitting `eos_id`, or after the token that takes its clock more than
        `horizon_days` past the prompt's last time (that token is kept, so callers
        see why it stopped). PAD is never sampled; temperature <= 0 is greedy.
        Contexts longer than max_len keep their last max_len tokens, re-timed from
        the first kept one. Returns `Generated(tokens, times)` [B, <= max_new_tokens].
        """
        cfg = self.config
        was_training = self.training
        self.eval()
        device = tokens.device
        B, T0 = tokens.shape
        lengths = (tokens != PAD_ID).sum(1)
        if bool((lengths == 0).any()):
            raise ValueError("every prompt needs at least one token")
        total = T0 + max_new_tokens
        buf_tok = torch.full((B, total), PAD_ID, dtype=torch.long, device=device)
        buf_tok[:, :T0] = tokens
        buf_time = torch.zeros(B, total, device=device)
        buf_time[:, :T0] = times
        sides = []  # (buffer, width) for notes and images; generated positions get zeros
        for name, emb, dim in (("note_emb", note_emb, cfg.note_dim),
                               ("image_emb", image_emb, cfg.image_dim)):
            buf = torch.zeros(B, total, dim, device=device)
            if dim:
                buf[:, :T0] = self._side_input(emb, name, dim)
            sides.append(buf)

        days_of = torch.zeros(cfg.vocab_size, device=device)
        for token_id, days in (time_token_days or {}).items():
            days_of[token_id] = days
        rows = torch.arange(B, device=device)
        clock = buf_time[rows, lengths - 1].clone()
        start_clock = clock.clone()
        active = torch.ones(B, dtype=torch.bool, device=device)
        out_tok = torch.full((B, max_new_tokens), PAD_ID, dtype=torch.long, device=device)
        out_time = torch.zeros(B, max_new_tokens, device=device)

        steps = 0
        for step in range(max_new_tokens):
            if not bool(active.any()):
                break
            steps = step + 1
            r = rows[active]  # rows still generating
            L = lengths[r]
            start = (L - cfg.max_len).clamp(min=0)
            W = int(min(int(L.max()), cfg.max_len))
            offs = torch.arange(W, device=device)
            idx = start.unsqueeze(1) + offs  # [b, W]
            inside = offs.unsqueeze(0) < (L - start).unsqueeze(1)
            idx = torch.where(inside, idx, 0)
            ctx_tok = buf_tok[r].gather(1, idx).masked_fill(~inside, PAD_ID)
            t0 = buf_time[r].gather(1, start.unsqueeze(1)) * (start > 0).unsqueeze(1)
            ctx_time = ((buf_time[r].gather(1, idx) - t0).clamp(min=0)).masked_fill(~inside, 0.0)
            ctx_side = [buf[r].gather(1, idx.unsqueeze(-1).expand(-1, -1, buf.shape[-1]))
                        for buf in sides]
            hidden = self(ctx_tok, ctx_time, *ctx_side)  # [b, W, d]
            logits = self.lm_head(hidden[torch.arange(len(r), device=device), L - start - 1])
            logits[:, PAD_ID] = float("-inf")
            if temperature <= 0:
                nxt = logits.argmax(-1)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = F.softmax(logits, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)

            clock[r] = clock[r] + days_of[nxt]
            out_tok[r, step] = nxt
            out_time[r, step] = clock[r]
            buf_tok[r, L] = nxt
            buf_time[r, L] = clock[r]
            lengths[r] = L + 1
            stop = torch.zeros(len(r), dtype=torch.bool, device=device)
            if eos_id is not None:
                stop |= nxt == eos_id
            if horizon_days is not None:
                stop |= (clock[r] - start_clock[r]) > horizon_days
            active[r[stop]] = False

        self.train(was_training)
        return Generated(out_tok[:, :steps], out_time[:, :steps])


def token_losses(logits: torch.Tensor, targets: torch.Tensor, **kwargs) -> torch.Tensor:
    """Cross-entropy of each target [B, T] under logits [B, T, V] (unreduced).

    Computed over flat rows: with the classes on a strided middle axis ([B, V, T]) the
    same loss and its gradient take 2.6 times as long on CPU."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           reduction="none", **kwargs).view(targets.shape)


def last_position(hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """hidden [B, T, d] at each row's last non-pad position -> [B, d] (row 0 if all pad)."""
    T = tokens.shape[1]
    index = torch.arange(T, device=tokens.device) * (tokens != PAD_ID)
    last = index.amax(dim=1)  # [B]
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
