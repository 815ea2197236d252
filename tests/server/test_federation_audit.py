"""The server's "round" audit line: participants, rejections, epsilon and checkpoint hashes."""

from __future__ import annotations

import hashlib

from fedehr.server.federation import audit_round
from fedehr.shared.audit import AuditLog, verify


def test_round_line_records_the_round_and_hashes_its_checkpoint_files(tmp_path):
    checkpoint = tmp_path / "checkpoints" / "round-0001"
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.safetensors").write_bytes(b"weights")
    (checkpoint / "model_card.json").write_bytes(b'{"rounds": 1}')
    entry = {"round": 1, "participants": ["hospital_a", "hospital_b"],
             "rejected": {"hospital_c": "update contains NaN"}, "failed": [],
             "epsilon": {"hospital_a": 1.5, "hospital_b": 1.25}, "anchor_loss": 3.2}
    log = AuditLog(tmp_path / "audit.jsonl")

    line = audit_round(log, entry, checkpoint)

    assert verify(log.path).ok
    assert line["event"] == "round" and line["round"] == 1
    assert line["participants"] == ["hospital_a", "hospital_b"]
    assert line["rejected"] == {"hospital_c": "update contains NaN"}
    assert line["epsilon"] == {"hospital_a": 1.5, "hospital_b": 1.25}
    assert line["checkpoint"] == str(checkpoint)
    assert line["sha256"] == {"model.safetensors": hashlib.sha256(b"weights").hexdigest(),
                              "model_card.json": hashlib.sha256(b'{"rounds": 1}').hexdigest()}
