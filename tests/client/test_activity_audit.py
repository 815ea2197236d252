"""Every activity event of a site also lands in its hash-chained audit log."""

from __future__ import annotations

import json

from fedehr.client import activity
from fedehr.shared.audit import verify


def test_activity_records_form_a_verifiable_site_audit_chain(tmp_path):
    activity.record(tmp_path, "release", round_id="local/vocabulary", epsilon=0.5,
                    epsilon_budget=8.0)
    activity.record(tmp_path, "train", round_id="local/round-1", steps=4, epsilon=1.2)
    activity.record(tmp_path, "refusal", message_type="train", reason="over budget")

    report = verify(activity.audit_path(tmp_path))
    assert report.ok and report.lines == 3
    lines = [json.loads(raw) for raw in activity.audit_path(tmp_path).read_text().splitlines()]
    assert [line["event"] for line in lines] == ["release", "train", "refusal"]
    assert lines[1]["round_id"] == "local/round-1" and lines[1]["epsilon"] == 1.2
    assert [e["kind"] for e in activity.read(tmp_path)] == ["release", "train", "refusal"]
