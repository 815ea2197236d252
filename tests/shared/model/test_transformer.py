"""EHRModel forward pass and losses: shapes, causality, padding, modalities, PROs."""

from __future__ import annotations

import itertools

import pytest
import torch

from fedehr.shared.errors import ConfigError
from fedehr.shared.model import EHRModel
from fedehr.shared.tokenizer.batch import PAD_ID, Batch


@pytest.fixture
def model(config):
    torch.manual_seed(0)
    return EHRModel(config).eval()


def test_shapes(model, config, make_batch):
    batch = make_batch(config, [7, 4, 2], T=7)
    hidden = model(*batch)
    assert hidden.shape == (3, 7, config.d_model)
    assert model.logits(hidden).shape == (3, 7, config.vocab_size)
    assert model.per_example_loss(batch).shape == (3,)
    assert model.embed(batch).shape == (3, config.d_model)


def test_changing_a_future_token_does_not_change_earlier_logits(model, config, make_batch):
    batch = make_batch(config, [8], T=8)
    changed = batch.tokens.clone()
    changed[0, 5] = 1 if int(batch.tokens[0, 5]) != 1 else 2
    times = batch.times.clone()
    times[0, 5:] += 100.0  # later events also move in time
    before = model.logits(model(*batch))
    after = model.logits(model(changed, times, *batch[2:]))
    torch.testing.assert_close(before[:, :5], after[:, :5])
    assert not torch.allclose(before[:, 5], after[:, 5])


def test_padding_does_not_change_the_valid_positions(model, config, make_batch):
    short = make_batch(config, [5], T=5)
    pad = 4  # appended PAD tokens, with garbage in their side inputs
    padded = short._replace(
        tokens=torch.cat([short.tokens, torch.full((1, pad), PAD_ID)], 1),
        times=torch.cat([short.times, torch.full((1, pad), 1e4)], 1),
        note_emb=torch.cat([short.note_emb, torch.full((1, pad, config.note_dim), 7.0)], 1),
        image_emb=torch.cat([short.image_emb, torch.randn(1, pad, config.image_dim)], 1))
    h_short, h_padded = model(*short), model(*padded)
    assert torch.isfinite(h_padded).all()
    torch.testing.assert_close(h_short, h_padded[:, :5])
    torch.testing.assert_close(model.per_example_loss(short, generator=torch.Generator()),
                               model.per_example_loss(padded, generator=torch.Generator()))
    torch.testing.assert_close(model.embed(short), model.embed(padded))
    pooled = model.embed(padded, "last+mean")
    torch.testing.assert_close(pooled, model.embed(short, "last+mean"))
    torch.testing.assert_close(pooled[:, config.d_model:], h_short.mean(1))  # pads left out
    with pytest.raises(ConfigError, match="unknown pooling 'max'"):
        model.embed(short, "max")


def test_an_all_padding_row_gives_finite_outputs_and_gradients(config, make_batch):
    model = EHRModel(config)
    batch = make_batch(config, [6, 0], T=6)
    loss = model.per_example_loss(batch)
    loss.sum().backward()
    assert torch.isfinite(loss).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("note,image,pro", list(itertools.product([0, 6], [0, 4], [0, 5])))
def test_any_subset_of_modalities_runs(make_config, make_batch, note, image, pro):
    config = make_config(note_dim=note, image_dim=image, pro_dim=pro)
    model = EHRModel(config)
    loss = model.per_example_loss(make_batch(config, [6, 3], T=6))
    loss.sum().backward()
    assert loss.shape == (2,) and torch.isfinite(loss).all()
    assert (model.note_proj is None) == (note == 0)
    assert (model.image_proj is None) == (image == 0)
    assert (model.pro_encoder is None) == (pro == 0)


def test_note_embeddings_change_the_representation(model, config, make_batch):
    batch = make_batch(config, [6], T=6)
    other = batch._replace(note_emb=batch.note_emb.clone())
    other.note_emb[0, 2] = torch.randn(config.note_dim)
    assert not torch.allclose(model.embed(batch), model.embed(other))


def test_contrastive_loss_is_lower_for_the_true_pro_than_a_shuffled_one(make_config):
    """Train briefly on patients whose PRO scores follow their codes, then compare."""
    torch.manual_seed(0)
    config = make_config(n_layers=1, note_dim=0, image_dim=0, pro_dim=4,
                         contrastive_weight=1.0, contrastive_negatives=8)
    model = EHRModel(config)
    g = torch.Generator().manual_seed(1)

    def patients(n):
        group = torch.randint(0, 4, (n,), generator=g)
        tokens = torch.randint(5, config.vocab_size, (n, 8), generator=g)
        tokens[:, 0] = 1
        tokens[:, -1] = 1 + group  # the latest code determines the PRO profile
        pro = torch.nn.functional.one_hot(group, 4).float() * 2 - 0.5
        pro = pro + 0.1 * torch.randn(n, 4, generator=g)
        times = torch.arange(8.0).expand(n, 8)
        return Batch(tokens, times, torch.zeros(n, 8, 0), torch.zeros(n, 8, 0), pro,
                     torch.ones(n))

    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):
        batch = patients(32)
        hidden = model(*batch)
        loss = model.contrastive_loss(hidden, batch.tokens, batch.pro, batch.pro_mask,
                                      generator=g).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    model.eval()
    test = patients(256)
    negatives = torch.randn(256, config.contrastive_negatives, 4, generator=g)
    with torch.no_grad():
        hidden = model(*test)
        true = model.contrastive_loss(hidden, test.tokens, test.pro, test.pro_mask, negatives)
        shuffled = test.pro[torch.randperm(256, generator=g)]
        wrong = model.contrastive_loss(hidden, test.tokens, shuffled, test.pro_mask, negatives)
    assert true.mean() < 0.5 * wrong.mean()


def test_pro_mask_switches_the_contrastive_term_off(model, config, make_batch):
    batch = make_batch(config, [6, 6], T=6)
    hidden = model(*batch)
    nce = model.contrastive_loss(hidden, batch.tokens, batch.pro, batch.pro_mask)
    assert nce[0] > 0 and nce[1] == 0


def test_a_vocabulary_with_a_token_more_starts_from_the_same_weights(make_config):
    # the DP vocabulary release is unseeded: reruns must still start paired
    tokens = [f"CODE//{i:02d}" for i in range(51)]
    fewer = tokens[:20] + tokens[21:]  # one code less, in the middle of the sorted order

    def built(names, seed: int = 0) -> dict:
        torch.manual_seed(seed)
        return EHRModel(make_config(vocab_size=len(names)), tokens=names).state_dict()

    full, short, other = built(tokens), built(fewer), built(fewer, seed=1)
    rows = [tokens.index(t) for t in fewer]
    for name, weights in short.items():
        if name in ("tok_emb.weight", "lm_head.weight"):
            assert torch.equal(weights, full[name][rows]), name
        else:
            assert torch.equal(weights, full[name]), name
    assert not torch.equal(short["blocks.0.attn.qkv.weight"], other["blocks.0.attn.qkv.weight"])
    assert not torch.equal(short["tok_emb.weight"], other["tok_emb.weight"])
    torch.manual_seed(0)
    EHRModel(make_config(vocab_size=len(tokens)), tokens=tokens)
    after_model = torch.rand(3)
    torch.manual_seed(0)
    torch.randint(2**62, ())  # the model takes one draw from the global stream, no more
    assert torch.equal(after_model, torch.rand(3))


def test_tokens_must_match_the_vocabulary_size(make_config):
    with pytest.raises(ConfigError, match="3 tokens for a model of vocab_size 50"):
        EHRModel(make_config(), tokens=["a", "b", "c"])
