"""No surprise spending (issue 13, hole 7): one run spends at most its stated share, says so
before it starts, and a trial ledger is a sandbox marked TRIAL everywhere."""

from __future__ import annotations

import json

import pytest

from fedehr.client.config import PrivacyConfig, SiteConfig
from fedehr.client.privacy import BudgetExceededError, PrivacyLedger
from fedehr.client.privacy.budget import (
    announcement,
    check_run_release,
    noise_for_rounds_left,
    run_target,
    spent_by_run,
)
from fedehr.client.site_handlers import open_ledger
from fedehr.server.runs import _preview_line

Q, STEPS = 0.05, 40


def _ledger(tmp_path, budget: float = 8.0) -> PrivacyLedger:
    return PrivacyLedger.open(tmp_path / "ledger.json", epsilon_budget=budget, delta=1e-5)


def _train_run(ledger: PrivacyLedger, run: str, share: float, rounds: int = 2) -> None:
    """A run's rounds as train_round picks their noise: its share over the rounds left."""
    for rnd in range(1, rounds + 1):
        left = STEPS * (rounds - rnd + 1)
        noise = noise_for_rounds_left(ledger, sample_rate=Q, steps_planned=left, min_noise=0.3,
                                      target_epsilon=run_target(ledger, run, share))
        check_run_release(ledger, run, share, noise, Q, STEPS)
        ledger.charge(noise, Q, STEPS, purpose="dp-sgd", round_id=f"{run}/round-{rnd}:x")


def test_a_two_round_run_spends_its_share_not_the_lifetime_budget(tmp_path):
    ledger = _ledger(tmp_path)
    _train_run(ledger, "trial-fed", share=2.0)
    assert 1.9 <= spent_by_run(ledger, "trial-fed") <= 2.0 + 1e-6
    assert ledger.remaining() >= 6.0 - 1e-6  # the old rule spent 7.99 of 8 here


def test_a_second_run_gets_its_own_share_and_a_release_past_it_is_refused(tmp_path):
    ledger = _ledger(tmp_path)
    _train_run(ledger, "study-a", share=2.0)
    _train_run(ledger, "study-b", share=2.0)
    assert spent_by_run(ledger, "study-b") <= 2.0 + 1e-6 and ledger.spent() < 4.0
    with pytest.raises(BudgetExceededError, match="past its share"):
        check_run_release(ledger, "study-b", 2.0, 3.0, Q, STEPS)


def test_the_site_announces_what_a_run_will_spend(tmp_path):
    ledger = _ledger(tmp_path)
    assert announcement(ledger, None, 2.0, trial=False).startswith(
        "each run will spend up to epsilon 2.000 of remaining 8.000 (lifetime 8")
    _train_run(ledger, "fed", share=2.0, rounds=1)
    text = announcement(ledger, "fed", 3.0, trial=False)
    assert "run 'fed' will spend up to epsilon" in text and "spent" in text


def test_a_trial_ledger_is_separate_and_says_trial(tmp_path):
    def site(trial: bool) -> SiteConfig:
        return SiteConfig(name="hospital_a", data=tmp_path / "meds", state_dir=tmp_path / "s",
                          insecure=True, privacy=PrivacyConfig(trial=trial))
    trial = open_ledger(site(True))
    trial.charge(1.0, Q, STEPS, purpose="dp-sgd", round_id="fed/round-1:x")
    assert trial.path.name == "privacy-ledger.trial.json"
    assert open_ledger(site(False)).spent() == 0.0  # the real ledger is untouched
    assert announcement(trial, "fed", 2.0, trial=True).startswith("TRIAL ledger")


def test_run_start_previews_each_sites_budget_from_its_last_report():
    history = [[1.0, Q, STEPS]]
    report = {"epsilon": 0.5, "delta": 1e-5, "accountant": "rdp", "epsilon_budget": 8.0,
              "history": history, "epsilon_per_run": 2.0, "trial": True}
    line = _preview_line("hospital_a", json.loads(json.dumps(report)), resume=False)
    assert "TRIAL" in line and "of lifetime 8" in line and "will spend up to 2.000" in line
    assert "unknown until the site first replies" in _preview_line("hospital_b", None,
                                                                    resume=False)
