"""The one-run audit (Steinke, Nasr, Jagielski 2023) catches DP-SGD that adds no noise."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fedehr.client.privacy.dp_sgd import DPConfig
from fedehr.client.privacy.one_run_audit import (
    AuditRun,
    audit_dp_sgd,
    epsilon_lower_bound,
    noise_silently_off,
)

sys.path.insert(0, str(Path(__file__).parents[2] / "shared" / "training"))
from standin import TinyLM, token_dataset  # noqa: E402

DP = DPConfig(max_grad_norm=1.0, noise_multiplier=8.0, delta=1e-5)


def _audit():
    torch.manual_seed(0)  # 16 tokens in the data, 256 rows: canaries where data rarely is
    run = audit_dp_sgd(TinyLM(vocab=256), token_dataset(32), dp=DP, steps=20, batch_size=16,
                       lr=1e-2, canaries=200, seed=3, within="emb.weight")
    return run.judge(k_in=40, k_out=40)


def test_the_lower_bound_follows_the_binomial_tail():
    assert epsilon_lower_bound(40, 80) == 0.0  # chance level certifies nothing
    all_right = epsilon_lower_bound(80, 80)
    assert 1 / (1 + np.exp(-all_right)) == pytest.approx(0.05 ** (1 / 80), rel=1e-6)  # p^80 = 5%


def test_perfect_scores_give_perfect_guesses():
    included = np.array([True, False] * 50)
    result = AuditRun(included.astype(float), included, epsilon_ledger=1.0).judge(20, 20)
    assert (result.guesses, result.correct) == (40, 40)
    assert result.epsilon_lower_bound == result.best_certifiable


def test_an_honest_run_stays_within_its_ledger_epsilon():
    result = _audit()
    assert result.epsilon_lower_bound <= result.epsilon_ledger


def test_a_planted_bug_that_drops_the_noise_is_caught():
    with noise_silently_off():
        result = _audit()
    assert result.epsilon_lower_bound > result.epsilon_ledger
    assert result.correct >= 0.9 * result.guesses
