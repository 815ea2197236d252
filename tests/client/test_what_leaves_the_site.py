"""What leaves a site besides the DP-SGD update, and when a site refuses to release.

Holes closed by issue 13: exact losses and patient counts are kept at the site
unless site.yaml declares them public; an open-domain count release is
refused; a ledger that disappeared at a site that has released stops it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from fedehr.client import activity
from fedehr.client import site_handlers as H
from fedehr.client.config import ModalityConfig, PrivacyConfig, SiteConfig, TrainingLimits
from fedehr.client.privacy import PrivacyLedger
from fedehr.shared import messages as M
from fedehr.shared.data.dataset import MEDSDataset
from fedehr.shared.data.synth import synthesize
from fedehr.shared.model import EHRModel, ModelConfig
from fedehr.shared.privacy.accounting import epsilon_of
from fedehr.shared.tokenizer.vocabulary import Vocabulary


@pytest.fixture(scope="module")
def meds(tmp_path_factory) -> Path:
    (summary,) = synthesize(tmp_path_factory.mktemp("h"), sites=1, patients=60, seed=5)
    return Path(summary.path)


def _site(meds: Path, state: Path, **privacy) -> SiteConfig:
    return SiteConfig(name="hospital_a", data=meds, state_dir=state, insecure=True,
                      privacy=PrivacyConfig(epsilon=8.0, delta=1e-5, **privacy),
                      training=TrainingLimits(max_local_steps=2, max_batch_size=8, threads=1),
                      modalities=ModalityConfig(notes=False, images=False, pro=False))


def _request(site: SiteConfig) -> tuple[dict, dict]:
    codes = MEDSDataset.open(site.data).codes()["code"].to_list()
    vocab = Vocabulary.build({c: 10 for c in codes}, min_count=1)
    cfg = ModelConfig.preset("tiny", len(vocab), max_len=32, note_dim=0, image_dim=0)
    torch.manual_seed(0)
    config = {M.ROUND_ID: "fed/round-1", M.VOCAB_JSON: vocab.canonical_json(),
              M.VOCAB_HASH: vocab.hash, M.MODEL_CONFIG: json.dumps(cfg.to_dict()),
              M.LOCAL_STEPS: 2, M.BATCH_SIZE: 8, M.LEARNING_RATE: 1e-3, M.ROUNDS_LEFT: 1}
    return EHRModel(cfg).state_dict(), config


def test_a_training_reply_carries_its_ledger_but_by_default_no_loss_count_or_timing(meds,
                                                                                   tmp_path):
    site = _site(meds, tmp_path)
    _, metrics = H.train_round(site, *_request(site))
    assert M.TRAIN_LOSS not in metrics and M.TRAIN_SECONDS not in metrics
    assert metrics[M.NUM_EXAMPLES] == 1.0  # an equal FedAvg weight, not the patient count
    accountant, history = M.ledger_history(metrics)  # what the server copies to the card
    assert epsilon_of(history, delta=1e-5, accountant=accountant) == pytest.approx(
        metrics[M.EPSILON], rel=1e-9)


def test_by_default_an_evaluation_request_touches_no_patient_and_sends_no_loss(meds, tmp_path):
    site = _site(meds, tmp_path)
    metrics = H.evaluate_round(site, *_request(site))
    # its weight (1) and that it keeps its count private (a setting, not a patient number)
    assert metrics == {M.NUM_EXAMPLES: 1.0, M.COUNTS_PUBLIC: 0.0}


def test_a_site_that_declares_them_public_sends_exact_losses_and_counts(meds, tmp_path):
    site = _site(meds, tmp_path, release_metrics="public", public_counts=True)
    arrays, config = _request(site)
    _, trained = H.train_round(site, arrays, config)
    evaluated = H.evaluate_round(site, arrays, config)
    assert math.isfinite(trained[M.TRAIN_LOSS]) and math.isfinite(evaluated[M.EVAL_LOSS])
    assert trained[M.NUM_EXAMPLES] > 1 and evaluated[M.NUM_EXAMPLES] > 1


def test_an_open_domain_count_release_is_refused_before_anything_is_charged(meds, tmp_path):
    site = _site(meds, tmp_path)
    with pytest.raises(H.SiteRefusal, match="open-domain"):
        H.release_counts(site, {M.ROUND_ID: "fed/vocab-counts", M.CANDIDATES: "null"})
    assert not site.ledger_path.exists() or H.open_ledger(site).entries == ()


def test_a_missing_ledger_at_a_site_that_released_before_stops_training(meds, tmp_path):
    site = _site(meds, tmp_path)
    H.train_round(site, *_request(site))
    site.ledger_path.unlink()  # a restore from backup that forgot the ledger
    with pytest.raises(H.SiteRefusal, match="ledger is missing") as caught:
        H.open_ledger(site)
    assert "new_ledger" in caught.value.fix
    operator = dataclasses.replace(site, privacy=dataclasses.replace(site.privacy,
                                                                     new_ledger=True))
    assert H.open_ledger(operator).entries == ()


def test_a_new_site_starts_a_fresh_ledger(meds, tmp_path):
    site = _site(meds, tmp_path)
    activity.record(site.state_dir, "evaluate", round_id="fed/0", released=False)
    assert isinstance(H.open_ledger(site), PrivacyLedger)


def test_a_noised_held_out_loss_is_charged_once_per_request(meds, tmp_path):
    site = _site(meds, tmp_path, release_metrics="noised", metric_loss_bound=15.0)
    arrays, config = _request(site)
    first = H.evaluate_round(site, arrays, config)
    again = H.evaluate_round(site, arrays, config)
    assert first == again and 0.0 <= first[M.EVAL_LOSS] <= 15.0
    assert first[M.NUM_EXAMPLES] == 1.0
    assert [e.purpose for e in H.open_ledger(site).entries] == ["metric-release"]
