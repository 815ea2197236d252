"""The DP recipe sweep's own parts that change what a site trains and how the server steps."""

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


def test_the_sweeps_fedadam_is_the_products_flower_fedadam_over_two_rounds():
    from types import SimpleNamespace

    import numpy as np
    from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict

    from fedehr.server.config import StrategyConfig
    from fedehr.server.strategies import build_strategy
    from fedehr.shared import messages as M

    flower = build_strategy(StrategyConfig(name="fedadam"), min_sites=1)
    recipe = SWEEP.Recipe("t", server="fedadam")  # the product's default server_lr
    rng = np.random.default_rng(0)
    ours = {"w": torch.randn(6, 4), "b": torch.randn(4)}
    state = {}
    for rnd in range(2):
        flower.current_arrays = {k: v.numpy().copy() for k, v in ours.items()}
        sites = [({k: v + 0.01 * torch.from_numpy(rng.standard_normal(v.shape, dtype=np.float32))
                   for k, v in ours.items()}, n) for n in (30, 10)]
        replies = [SimpleNamespace(has_error=lambda: False, content=RecordDict({
            M.ARRAYS: ArrayRecord({k: Array(v.numpy()) for k, v in site.items()}),
            M.METRICS: MetricRecord({M.NUM_EXAMPLES: n})})) for site, n in sites]
        expected, _ = flower.aggregate_train(rnd + 1, replies)
        mean_update = {k: sum(n * (s[k] - ours[k]) for s, n in sites) / 40 for k in ours}
        ours = SWEEP.server_step(recipe, state, ours, mean_update, rnd)
        for k, array in expected.items():
            np.testing.assert_allclose(ours[k].numpy(), array.numpy(), rtol=1e-5, atol=1e-6)
