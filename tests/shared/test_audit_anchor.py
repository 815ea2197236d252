"""An empty or cut audit log is a finding, not "intact": the model card anchors the log's
head, and `fedehr audit verify --checkpoint` checks the chain still passes through it
(issue 18, section 5)."""

from __future__ import annotations

import pytest

from fedehr.shared.audit import AuditLog, head, verify
from fedehr.shared.checkpoint import ModelCard
from tests.fixtures.cli import run_fedehr
from tests.shared.registry.consortium import make_pki, save_checkpoint


@pytest.fixture
def scratch(tmp_path):
    folder = tmp_path / "Prüfpfad ä ö"
    folder.mkdir()
    return folder


def _log(folder, n: int):
    log = AuditLog(folder / "audit.jsonl")
    for i in range(n):
        log.append("round", round=i)
    return log.path


def test_an_empty_log_is_a_finding(scratch):
    path = scratch / "audit.jsonl"
    path.write_bytes(b"")
    report = verify(path)
    assert not report.ok and "empty" in report.reason


def test_a_log_cut_after_its_anchored_head_is_a_finding(scratch):
    path = _log(scratch, 5)
    anchored = head(path)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:3]))  # still a valid chain of three lines
    assert verify(path).ok
    report = verify(path, anchor=anchored)
    assert not report.ok and "cut short or rewritten" in report.reason


def test_a_log_that_grew_after_its_anchor_verifies(scratch):
    path = _log(scratch, 3)
    anchored = head(path)
    AuditLog(path).append("run-end")
    assert verify(path, anchor=anchored).ok


def test_cli_verify_reads_the_anchor_from_a_signed_checkpoint(scratch, capsys, monkeypatch):
    path = _log(scratch, 4)
    anchored = head(path)
    original = ModelCard.__init__

    def with_anchor(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.training = {**self.training, "audit_head": anchored}

    monkeypatch.setattr(ModelCard, "__init__", with_anchor)
    ckpt = scratch / "round 0002"
    save_checkpoint(ckpt, make_pki(scratch / "pki"), rounds=2)
    monkeypatch.undo()
    assert run_fedehr(capsys, "audit", "verify", path, "--checkpoint", ckpt).code == 0
    path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:2]))
    result = run_fedehr(capsys, "audit", "verify", path, "--checkpoint", ckpt)
    assert result.code == 1 and "cut short or rewritten" in result.err
