"""The DP recipe sweep's own parts that change what a site trains: low-rank adapters."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

from fedehr.client.privacy.dp_sgd import DPConfig, train_dp
from fedehr.client.site_data import site_mapping
from fedehr.shared.data import schema as S
from fedehr.shared.data.dataset import MEDSDataset
from fedehr.shared.data.synth import synthesize
from fedehr.shared.model import ModelConfig
from fedehr.shared.model.transformer import EHRModel
from fedehr.shared.tokenizer.vocabulary import Vocabulary

_BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    # By path: a dependency installs an unrelated top-level `benchmarks` package.
    spec = importlib.util.spec_from_file_location(name, _BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


FVC = sys.modules.get("fed_vs_central") or _load("fed_vs_central")
SWEEP = _load("dp_recipe_sweep")


def test_lora_trains_only_the_adapters_under_dp_and_merges_into_the_same_keys(tmp_path):
    site = synthesize(tmp_path / "h", sites=1, patients=120, seed=3)[0]
    hospital = FVC.Hospital(site.name, Path(site.path), site.harmonisation)
    dataset = MEDSDataset.open(hospital.path)
    mapping = site_mapping(FVC.site_config(hospital, tmp_path / "m"), dataset)
    codes = mapping.apply(dataset.scan(S.TRAIN).collect())[S.CODE].value_counts()
    vocab = Vocabulary.build(dict(codes.iter_rows()), min_count=1)
    config = ModelConfig.preset("tiny", len(vocab.tokens), max_len=16, note_dim=0, image_dim=0)
    windows = FVC.site_windows(hospital, tmp_path / "state", vocab, config)
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
    for name, value in model.state_dict().items():  # the base weights kept the warm start
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
