"""A privacy budget belongs to the patients (issue 18, section 2): identity, trust, refusal."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from fedehr.client import activity
from fedehr.client.cli import app
from fedehr.client.config import PrivacyConfig, SiteConfig
from fedehr.client.privacy import PrivacyLedger
from fedehr.client.privacy.ledger import patients_fingerprint
from fedehr.client.site_handlers import SiteRefusal, check_can_join, open_ledger
from fedehr.shared.data import schema as S
from fedehr.shared.data.dataset import MEDSDataset
from fedehr.shared.data.synth.hospitals import synthesize


def _site(tmp_path, epsilon: float = 8.0) -> SiteConfig:
    return SiteConfig(name="hospital_a", data=tmp_path / "meds", state_dir=tmp_path / "state",
                      insecure=True, privacy=PrivacyConfig(epsilon=epsilon, delta=1e-5))


def _release(site: SiteConfig, round_id: str, noise: float = 1.0) -> PrivacyLedger:
    """A charged release with its activity line, as the site handlers make them."""
    ledger = open_ledger(site)
    ledger.charge(noise, 0.05, 50, purpose="dp-sgd", round_id=round_id)
    activity.record(site.state_dir, "train", round_id=round_id, steps=50, examples=100,
                    seconds=1.0, patients=200, epsilon=ledger.spent())
    return ledger


def test_a_reimport_of_the_same_patients_finds_the_same_ledger(tmp_path):
    (summary,) = synthesize(tmp_path / "meds", sites=1, patients=20, seed=3)
    dataset = MEDSDataset.open(summary.path)
    ids = dataset.subject_splits()["subject_id"].to_list()
    before = (patients_fingerprint(ids), dataset.fingerprint())
    meta_path = dataset.root / S.DATASET_FILE
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "created_at": "2031-01-01T00:00:00"}))
    reimported = MEDSDataset.open(summary.path)
    assert reimported.fingerprint() != before[1]  # the bytes changed...
    assert patients_fingerprint(  # ...the patients did not (order and repeats do not count)
        reversed(ids + ids[:3])) == before[0]
    assert patients_fingerprint(ids[1:]) != before[0]


def test_an_edited_epsilon_after_is_not_believed(tmp_path):
    site = _site(tmp_path)
    honest = _release(site, "fed/round-1").spent()
    doc = json.loads(site.ledger_path.read_text())
    doc["entries"][0]["epsilon_after"] = 0.01
    doc["epsilon_spent"] = 0.01
    site.ledger_path.write_text(json.dumps(doc))
    ledger = PrivacyLedger.read(site.ledger_path)
    assert ledger.spent() == pytest.approx(honest) and honest > 0.5
    assert [e.round_id for e in ledger.stored_totals_disagree()] == ["fed/round-1"]


def test_a_ledger_trimmed_behind_the_activity_log_is_refused(tmp_path):
    site = _site(tmp_path)
    _release(site, "fed/round-1")
    _release(site, "fed/round-2")
    doc = json.loads(site.ledger_path.read_text())
    doc["entries"] = doc["entries"][:1]  # an older backup, or a hand-edit
    site.ledger_path.write_text(json.dumps(doc))
    with pytest.raises(SiteRefusal, match="does not match the site's activity log"):
        open_ledger(site)


def test_site_status_does_not_recreate_a_deleted_ledger(tmp_path):
    site = _site(tmp_path)
    _release(site, "fed/round-1")
    site.ledger_path.unlink()
    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump({"name": "hospital_a", "data": "meds",
                                      "state_dir": "state", "insecure": True, "privacy": {
                                          "epsilon": 8.0, "delta": 1e-5, "accountant": "rdp"}}))
    result = CliRunner().invoke(app, ["status", "--config", str(config)],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert not site.ledger_path.exists()
    assert "missing" in result.output and "restore it from backup" in result.output


def test_a_budget_lowered_below_what_was_spent_refuses_to_join(tmp_path):
    spent = _release(_site(tmp_path), "fed/round-1", noise=0.8).spent()
    lowered = _site(tmp_path, epsilon=round(spent / 2, 3))
    with pytest.raises(SiteRefusal, match="already spent epsilon .* refuses to join"):
        check_can_join(lowered, open_ledger(lowered))
    check_can_join(_site(tmp_path), open_ledger(_site(tmp_path)))  # the old budget joins
