"""`fedehr audit privacy`: a model card alone lets a reader recompute every site's epsilon."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from fedehr.client.privacy import PrivacyLedger
from fedehr.shared.audit_cli import app
from fedehr.shared.checkpoint.card import ModelCard
from fedehr.shared.privacy.card_audit import audit_site

DELTA = 1e-5


@pytest.fixture
def summary(tmp_path) -> dict:
    """A site's card entry as the ledger writes it: a vocabulary release and two rounds."""
    ledger = PrivacyLedger.open(tmp_path / "ledger.json", epsilon_budget=8.0, delta=DELTA)
    ledger.charge(5.0, 1.0, 1, purpose="vocab-release", round_id="v")
    ledger.charge(1.1, 0.05, 40, purpose="dp-sgd", round_id="r1")
    ledger.charge(1.1, 0.05, 40, purpose="dp-sgd", round_id="r2")
    return ledger.summary()


def _checkpoint(tmp_path, privacy: dict):
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    card = ModelCard(architecture={"preset": "tiny"}, privacy=privacy)
    (folder / "model_card.json").write_bytes(card.to_json())
    return folder


def test_the_ledger_summary_recomputes_to_the_reported_epsilon_and_prv_is_tighter(summary):
    audit = audit_site("hospital_a", summary)
    assert audit.ok
    assert audit.rdp == pytest.approx(summary["epsilon"], rel=1e-9)
    assert audit.prv < audit.rdp


def test_the_command_prints_both_accountants_and_passes_an_honest_card(tmp_path, summary):
    result = CliRunner().invoke(app, ["privacy", str(_checkpoint(tmp_path, {"a": summary}))])
    assert result.exit_code == 0, result.output
    assert "RDP" in result.output and "PRV" in result.output and "ok" in result.output


def test_an_understated_epsilon_fails_the_audit(tmp_path, summary):
    understated = {**summary, "epsilon": summary["epsilon"] * 0.8}
    result = CliRunner().invoke(app, ["privacy", str(_checkpoint(tmp_path,
                                                                 {"a": understated}))])
    assert result.exit_code == 1
    assert "below the rdp recomputation" in result.output


def test_a_spend_without_a_history_cannot_be_checked_and_fails(summary):
    audit = audit_site("a", {**summary, "history": []})
    assert not audit.ok and "no charge history" in audit.problem
    assert audit.rdp is None and audit.prv is None
