"""The DP recipe sweep's own parts that change what a site trains: low-rank adapters."""

from __future__ import annotations

import torch

from fedehr.client.privacy.dp_sgd import DPConfig, train_dp
from fedehr.shared.model.transformer import EHRModel

from .conftest import load_benchmark, tiny_windows

SWEEP = load_benchmark("dp_recipe_sweep")


def test_lora_trains_only_the_adapters_under_dp_and_merges_into_the_same_keys(hospital,
                                                                              tmp_path):
    config, vocab, windows = tiny_windows(hospital, tmp_path)
    model = EHRModel(config, vocab.tokens)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = next(iter(torch.utils.data.DataLoader(windows.train, batch_size=8)))

    adapted = SWEEP.add_lora(model, rank=4)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith((".a.weight", ".b.weight")) for n in trainable)
    assert len(trainable) == 2 * len(SWEEP.LORA_LAYERS) * config.n_layers
    train_dp(model, windows.train, steps=3, batch_size=16, lr=1e-2,
             dp=DPConfig(max_grad_norm=1.0, noise_multiplier=1.0, delta=1e-5))
    model.eval()
    with torch.no_grad():
        adapted_loss = model.per_example_loss(batch)
    for name, value in model.state_dict().items():  # the base weights kept their start
        base = name.replace(".base.", ".")
        if base in before:
            assert torch.equal(value, before[base]), name

    SWEEP.merge_lora(adapted)
    assert model.state_dict().keys() == before.keys()
    with torch.no_grad():
        merged_loss = model.per_example_loss(batch)
    torch.testing.assert_close(merged_loss, adapted_loss, rtol=1e-5, atol=1e-5)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and all(k.startswith("blocks.") and k.endswith(".weight") for k in changed)
