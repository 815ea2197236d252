"""`fedehr site status` tells hospital IT what was sent, when, and the budget left."""

from __future__ import annotations

import yaml
from typer.testing import CliRunner

from fedehr.client import activity
from fedehr.client.cli import app


def test_status_lists_ledger_charges_and_recent_messages(tmp_path):
    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump({"name": "hospital_a", "data": "meds", "state_dir": "state",
                                      "insecure": True, "privacy": {"epsilon": 4.0}}))
    from fedehr.client.config import load_site_config
    from fedehr.client.site_handlers import open_ledger

    site = load_site_config(config)
    open_ledger(site).charge(2.0, 0.1, 20, purpose="dp-sgd", round_id="fed/round-1:abc")
    activity.record(site.state_dir, "train", round_id="fed/round-1", steps=20, patients=300,
                    examples=600, seconds=2.0, epsilon=1.5)
    activity.record(site.state_dir, "refusal", reason="budget spent")
    result = CliRunner().invoke(app, ["status", "--config", str(config)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "of 4 (remaining" in result.output and "fed/round-1:abc" in result.output
    assert "20 DP steps, 300 patients" in result.output and "budget spent" in result.output
