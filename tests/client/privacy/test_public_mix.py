"""Public windows in DP-SGD batches: clipped and noised with the patients', charged the same."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from fedehr.client.privacy import PrivacyLedger
from fedehr.client.privacy.dp_sgd import DPConfig, train_dp
from fedehr.shared.errors import ConfigError
from fedehr.shared.tokenizer.batch import Batch

sys.path.insert(0, str(Path(__file__).parents[2] / "shared" / "training"))
from standin import TinyLM, token_dataset  # noqa: E402

DELTA = 1e-5


def _ledger(tmp_path, name):
    return PrivacyLedger.open(tmp_path / f"{name}.json", epsilon_budget=8.0, delta=DELTA)


def _clipped_sum(model, dataset, clip):
    """Each row's gradient, clipped to `clip`, summed: by hand, one row at a time."""
    total = [torch.zeros_like(p) for p in model.parameters()]
    for i in range(len(dataset)):
        batch = Batch(*(t.unsqueeze(0) for t in dataset[i]))
        grads = torch.autograd.grad(model.per_example_loss(batch).sum(), model.parameters())
        norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
        for acc, g in zip(total, grads, strict=True):
            acc += g * min(1.0, clip / float(norm))
    return total


@pytest.mark.parametrize("processes", [1, 2])
def test_public_rows_are_clipped_like_the_patients_and_share_the_divisor(tmp_path, processes):
    torch.manual_seed(0)
    model, private, public = TinyLM(), token_dataset(8, seed=1), token_dataset(4, seed=2)
    expected = [(a + b) / 12 for a, b in zip(_clipped_sum(model, private, 0.05),
                                             _clipped_sum(model, public, 0.05), strict=True)]
    seen = tmp_path / "applied.pt"  # written by the process that noises (a fork with 2)
    # q = 1: every patient in the one step; noise 1e-9: the applied gradient is the clipped mean
    train_dp(model, private, steps=1, batch_size=8, lr=1e-3,  # not private: no ledger
             dp=DPConfig(max_grad_norm=0.05, noise_multiplier=1e-9, delta=DELTA),
             after_noise=lambda grads: torch.save([g.clone() for g in grads], seen),
             public=public, public_per_step=4, processes=processes)
    for got, want in zip(torch.load(seen), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)


def test_the_charge_is_the_same_with_and_without_public_rows(tmp_path):
    runs = {}
    for name, public in (("plain", None), ("mixed", token_dataset(32, seed=5))):
        torch.manual_seed(0)
        ledger = _ledger(tmp_path, name)
        runs[name] = train_dp(TinyLM(), token_dataset(64), steps=10, batch_size=16, lr=1e-2,
                              ledger=ledger, dp=DPConfig(max_grad_norm=1.0, target_epsilon=3.0),
                              public=public, public_per_step=0 if public is None else 8)
        runs[name + "-ledger"] = ledger.entries
    plain, mixed = runs["plain"], runs["mixed"]
    assert mixed.noise_multiplier == plain.noise_multiplier
    assert mixed.epsilon_spent == pytest.approx(plain.epsilon_spent, rel=1e-12)
    assert [(e.noise_multiplier, e.sample_rate, e.steps) for e in runs["mixed-ledger"]] == \
        [(e.noise_multiplier, e.sample_rate, e.steps) for e in runs["plain-ledger"]]
    # the tally counts the patients' rows only (about 16 a step, not 24)
    assert mixed.examples < 10 * 16 * 1.5


def test_an_empty_poisson_batch_still_trains_on_the_public_rows(tmp_path):
    model = TinyLM()
    result = train_dp(model, token_dataset(64), steps=20, batch_size=1, lr=1e-2,
                      ledger=_ledger(tmp_path, "l"),
                      dp=DPConfig(max_grad_norm=1.0, noise_multiplier=1.0),
                      public=token_dataset(16, seed=3), public_per_step=4)
    assert result.empty_steps > 0 and result.steps == 20
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())


@pytest.mark.parametrize("public, per_step, message", [
    (token_dataset(8), 0, "public windows per step must be >= 1"),
    (None, 4, "need a public dataset"),
])
def test_a_bad_public_mix_is_refused_before_training(tmp_path, public, per_step, message):
    ledger = _ledger(tmp_path, "l")
    with pytest.raises(ConfigError, match=message):
        train_dp(TinyLM(), token_dataset(16), steps=1, batch_size=4, lr=1e-2, ledger=ledger,
                 dp=DPConfig(max_grad_norm=1.0, noise_multiplier=1.0),
                 public=public, public_per_step=per_step)
    assert ledger.spent() == 0
