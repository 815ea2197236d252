"""The public anchor at rounds: steps after aggregation and windows in the sites' batches."""

from __future__ import annotations

import pytest
import torch

from fedehr.server.config import FederationConfig, SuperLinkConfig, WarmStartSpec
from fedehr.server.federation import Federation
from fedehr.shared.data import schema as S
from fedehr.shared.data.anchor import fetch_anchor
from fedehr.shared.model import EHRModel, ModelConfig
from fedehr.shared.tokenizer.merge import merge_vocabulary
from fedehr.shared.training import evaluate


@pytest.fixture(scope="module")
def anchor_root():
    return fetch_anchor()


def _federation(tmp_path, anchor_root, steps: int) -> Federation:
    cfg = FederationConfig(name="t", workdir=tmp_path, anchor=anchor_root,
                           superlink=SuperLinkConfig(insecure=True),
                           warm_start=WarmStartSpec(steps_per_round=steps, batch_size=4))
    return Federation(cfg)


def _model_and_vocab(fed: Federation):
    vocab = merge_vocabulary(anchor_counts=fed.anchor.counts, min_count=20,
                             anchor_values=fed.anchor.values)
    torch.manual_seed(0)
    return EHRModel(ModelConfig.preset("tiny", len(vocab.tokens), max_len=32, note_dim=0,
                                       image_dim=0)), vocab


@pytest.mark.parametrize("steps", [0, 3])
def test_anchor_steps_after_aggregation_train_only_when_asked(tmp_path, anchor_root, steps):
    fed = _federation(tmp_path, anchor_root, steps)
    model, vocab = _model_and_vocab(fed)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert fed._anchor_steps(model, vocab, rnd=1) == steps
    changed = any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert changed == (steps > 0)


def test_the_warm_start_stops_on_the_anchors_tuning_loss_and_keeps_its_best_weights(
        tmp_path, anchor_root):
    fed = Federation(FederationConfig(
        name="t", workdir=tmp_path, anchor=anchor_root, superlink=SuperLinkConfig(insecure=True),
        warm_start=WarmStartSpec(steps=50, batch_size=8, lr=2e-2)))
    model, vocab = _model_and_vocab(fed)
    warm = fed._warm_start(model, vocab)
    assert warm["best_step"] in range(25, 51, 25) and warm["steps"] >= warm["best_step"]
    tuning = fed._anchor_windows(vocab, model.config, S.TUNING)
    assert evaluate(model, tuning, batch_size=8)[0] == pytest.approx(warm["tuning_loss"])


def test_the_warm_start_measures_its_tuning_loss_as_often_as_configured(tmp_path, anchor_root):
    fed = Federation(FederationConfig(
        name="t", workdir=tmp_path, anchor=anchor_root, superlink=SuperLinkConfig(insecure=True),
        warm_start=WarmStartSpec(steps=30, batch_size=8, lr=2e-2, eval_every=10)))
    model, vocab = _model_and_vocab(fed)
    assert fed._warm_start(model, vocab)["best_step"] in (10, 20, 30)


def test_rounds_ask_for_public_anchor_windows_only_when_configured(tmp_path, anchor_root):
    from fedehr.shared import messages as M

    fed = _federation(tmp_path, anchor_root, 0)
    model, vocab = _model_and_vocab(fed)
    fed.cfg.local.anchor_per_step = 0
    assert M.ANCHOR_PER_STEP not in fed._round_config(1, model, vocab)
    fed.cfg.local.anchor_per_step = 32
    config = fed._round_config(1, model, vocab)
    assert config[M.ANCHOR_PER_STEP] == 32
    assert config[M.ANCHOR_FINGERPRINT] == fed.anchor.fingerprint  # the sites' copy must match


@pytest.mark.parametrize("value", [-1, 5000])
def test_a_nonsense_number_of_public_windows_is_refused(tmp_path, value):
    cfg = FederationConfig(name="t", workdir=tmp_path, superlink=SuperLinkConfig(insecure=True))
    cfg.local.anchor_per_step = value
    with pytest.raises(ValueError, match="local.anchor_per_step"):
        cfg.validate()
