"""The site's privacy ledger: cumulative, persistent, idempotent, atomic, enforced."""

from __future__ import annotations

import json
import os

import pytest
from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from fedehr.client.privacy import BudgetExceededError, PrivacyLedger
from fedehr.shared.errors import ConfigError, DataError
from fedehr.shared.privacy.accounting import epsilon_of

DELTA = 1e-5


def open_ledger(tmp_path, budget=8.0, **kw):
    return PrivacyLedger.open(tmp_path / "privacy-ledger.json", epsilon_budget=budget,
                              delta=kw.pop("delta", DELTA), **kw)


def test_new_ledger_is_written_at_once_and_spends_nothing(tmp_path):
    ledger = open_ledger(tmp_path)
    assert ledger.path.exists()
    assert ledger.spent() == 0.0
    assert ledger.remaining() == 8.0


def test_epsilon_is_cumulative_across_a_reopened_ledger(tmp_path):
    first = open_ledger(tmp_path)
    first.charge(1.0, 0.01, 200, purpose="dp-sgd", round_id="r1")
    after_one = first.spent()
    reopened = open_ledger(tmp_path)
    assert reopened.spent() == pytest.approx(after_one)
    reopened.charge(1.0, 0.01, 200, purpose="dp-sgd", round_id="r2")
    assert reopened.spent() > after_one
    assert open_ledger(tmp_path).spent() == pytest.approx(reopened.spent())


def test_spent_matches_opacus_rdp_accountant_over_the_whole_history(tmp_path):
    ledger = open_ledger(tmp_path)
    ledger.charge(1.1, 0.02, 50, purpose="dp-sgd", round_id="r1")
    ledger.charge(0.9, 0.05, 30, purpose="dp-sgd", round_id="r2")
    opacus = RDPAccountant()
    opacus.history = [(1.1, 0.02, 50), (0.9, 0.05, 30)]
    assert ledger.spent() == pytest.approx(opacus.get_epsilon(delta=DELTA), rel=1e-9)


def test_epsilon_of_equals_opacus_rdp_exactly_with_its_per_release_cache():
    history = [(5.0, 1.0, 1), (0.85, 0.083, 20), (0.9, 0.05, 30), (0.85, 0.083, 20)]
    for end in range(1, len(history) + 1):  # the repeated release comes from the cache
        opacus = RDPAccountant()
        opacus.history = history[:end]
        assert epsilon_of(history[:end], delta=DELTA) == opacus.get_epsilon(delta=DELTA)


def test_same_round_id_is_charged_once(tmp_path):
    ledger = open_ledger(tmp_path)
    first = ledger.charge(1.0, 0.01, 100, purpose="dp-sgd", round_id="run1/round3")
    again = open_ledger(tmp_path).charge(1.0, 0.01, 100, purpose="dp-sgd",
                                         round_id="run1/round3")
    assert again == first
    assert len(open_ledger(tmp_path).entries) == 1


def test_same_round_id_with_a_different_release_is_refused(tmp_path):
    ledger = open_ledger(tmp_path)
    ledger.charge(1.0, 0.01, 100, purpose="dp-sgd", round_id="r1")
    with pytest.raises(ConfigError, match="already charged"):
        ledger.charge(1.0, 0.01, 999, purpose="dp-sgd", round_id="r1")


def test_ledger_is_written_atomically_a_failed_rename_keeps_the_old_file(tmp_path, monkeypatch):
    ledger = open_ledger(tmp_path)
    ledger.charge(1.0, 0.01, 100, purpose="dp-sgd", round_id="r1")
    before = ledger.path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("simulated crash during rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        ledger.charge(1.0, 0.01, 100, purpose="dp-sgd", round_id="r2")
    monkeypatch.undo()
    assert ledger.path.read_bytes() == before
    assert [e.round_id for e in ledger.entries] == ["r1"]  # memory follows the disk
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_check_refuses_past_the_budget_with_spent_requested_and_budget(tmp_path):
    ledger = open_ledger(tmp_path, budget=1.0)
    with pytest.raises(BudgetExceededError) as err:
        ledger.check(0.5, 0.1, 1000)
    text = str(err.value)
    assert "spent epsilon=0.000" in text and "budget 1" in text and "Fix:" in text


def test_charge_past_the_budget_records_nothing(tmp_path):
    ledger = open_ledger(tmp_path, budget=1.0)
    with pytest.raises(BudgetExceededError):
        ledger.charge(0.5, 0.1, 1000, purpose="dp-sgd")
    assert open_ledger(tmp_path, budget=1.0).entries == ()


def test_would_exceed_is_computed_on_a_copy(tmp_path):
    ledger = open_ledger(tmp_path, budget=1.0)
    assert ledger.would_exceed(0.5, 0.1, 1000)
    assert not ledger.would_exceed(5.0, 0.01, 10)
    assert ledger.spent() == 0.0 and ledger.history == []


def test_reopening_with_another_delta_or_accountant_is_a_config_error(tmp_path):
    open_ledger(tmp_path).charge(1.0, 0.01, 10, purpose="dp-sgd")
    with pytest.raises(ConfigError, match="delta"):
        open_ledger(tmp_path, delta=1e-6)
    with pytest.raises(ConfigError, match="accountant"):
        open_ledger(tmp_path, accountant="prv")


def test_a_budget_change_is_recorded_and_spent_epsilon_kept(tmp_path):
    open_ledger(tmp_path).charge(1.0, 0.01, 100, purpose="dp-sgd")
    spent = open_ledger(tmp_path).spent()
    raised = open_ledger(tmp_path, budget=10.0)
    assert raised.epsilon_budget == 10.0 and raised.spent() == pytest.approx(spent)
    doc = json.loads(raised.path.read_text())
    assert doc["budget_changes"][0]["from"] == 8.0 and doc["budget_changes"][0]["to"] == 10.0


def test_an_unreadable_ledger_is_an_error_never_a_reset(tmp_path):
    path = tmp_path / "privacy-ledger.json"
    path.write_text("{ half a ledger")
    with pytest.raises(DataError, match="never delete"):
        PrivacyLedger.open(path, epsilon_budget=8, delta=DELTA)
    assert path.read_text() == "{ half a ledger"


def test_a_vocabulary_release_composes_with_dp_sgd_steps(tmp_path):
    ledger = open_ledger(tmp_path)
    ledger.charge(1.0, 0.01, 100, purpose="dp-sgd", round_id="r1")
    only_sgd = ledger.spent()
    ledger.charge(4.0, 1.0, 1, purpose="vocab-release", round_id="vocab")
    opacus = RDPAccountant()
    opacus.history = [(1.0, 0.01, 100), (4.0, 1.0, 1)]
    assert ledger.spent() > only_sgd
    assert ledger.spent() == pytest.approx(opacus.get_epsilon(delta=DELTA))


def test_noise_for_budget_on_a_fresh_ledger_agrees_with_opacus(tmp_path):
    ledger = open_ledger(tmp_path)
    ours = ledger.noise_for_budget(0.02, 300, target_epsilon=3.0)
    theirs = get_noise_multiplier(target_epsilon=3.0, target_delta=DELTA, sample_rate=0.02,
                                  steps=300, accountant="rdp")
    assert ours == pytest.approx(theirs, rel=0.02)


def test_noise_for_budget_counts_the_history_as_prior(tmp_path):
    ledger = open_ledger(tmp_path)
    fresh = ledger.noise_for_budget(0.02, 300, target_epsilon=4.0)
    ledger.charge(1.0, 0.02, 300, purpose="dp-sgd", round_id="r1")
    noise = ledger.noise_for_budget(0.02, 300, target_epsilon=4.0)
    assert noise > fresh
    assert ledger.epsilon_after(noise, 0.02, 300) == pytest.approx(4.0, abs=0.02)
    assert ledger.epsilon_after(noise, 0.02, 300) <= 4.0


def test_noise_for_budget_refuses_when_the_budget_is_spent(tmp_path):
    ledger = open_ledger(tmp_path, budget=1.0)
    ledger.charge(0.8, 0.05, 200, purpose="dp-sgd", enforce=False)
    assert ledger.spent() > 1.0
    with pytest.raises(BudgetExceededError):
        ledger.noise_for_budget(0.05, 10)


def test_prv_accountant_is_recorded_and_reported(tmp_path):
    ledger = open_ledger(tmp_path, accountant="prv")
    ledger.charge(1.0, 0.01, 100, purpose="dp-sgd")
    summary = open_ledger(tmp_path, accountant="prv").summary()
    assert summary["accountant"] == "prv"
    assert 0 < summary["epsilon"] < open_ledger(tmp_path / "rdp").charge(
        1.0, 0.01, 100, purpose="dp-sgd").epsilon_after  # PRV is the tighter bound
