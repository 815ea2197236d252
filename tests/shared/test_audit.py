"""The hash-chained audit log: appends chain, verify finds any edit, loss or reordering."""

from __future__ import annotations

import json
import multiprocessing

import pytest
import typer
from typer.testing import CliRunner

from fedehr.shared.audit import GENESIS, AuditError, AuditLog, canonical, head, sha256, verify
from fedehr.shared.audit_cli import app as audit_app


def _log(tmp_path, n: int = 5):
    log = AuditLog(tmp_path / "audit.jsonl")
    for i in range(n):
        log.append("round", round=i, participants=["hospital_a", "hospital_b"])
    return log.path


def _lines(path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _rewrite(path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


def test_appended_lines_form_an_intact_chain(tmp_path):
    path = _log(tmp_path, 5)
    report = verify(path)
    assert report.ok and report.lines == 5 and report.first_bad_line is None
    lines = [json.loads(raw) for raw in _lines(path)]
    assert [line["seq"] for line in lines] == [0, 1, 2, 3, 4]
    assert lines[0]["prev"] == GENESIS
    assert lines[1]["prev"] == sha256(_lines(path)[0].rstrip(b"\n"))
    assert lines[2]["event"] == "round" and lines[2]["round"] == 2
    assert lines[0]["time"].endswith("Z")


def test_head_is_the_hash_the_next_line_will_carry_as_prev(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl")
    assert head(log.path) == GENESIS
    log.append("run-start", rounds=3)
    before = head(log.path)
    line = log.append("run-end", ok=True)
    assert line["prev"] == before
    assert verify(log.path).head == head(log.path) != before


def test_reserved_field_names_are_refused(tmp_path):
    with pytest.raises(AuditError, match="reserved"):
        AuditLog(tmp_path / "audit.jsonl").append("round", seq=7)


def test_an_edited_field_is_found_at_its_line(tmp_path):
    path = _log(tmp_path)
    lines = _lines(path)
    lines[2] = lines[2].replace(b'"hospital_b"', b'"hospital_x"')
    _rewrite(path, lines)
    report = verify(path)
    assert not report.ok and report.first_bad_line == 3
    assert "edited" in report.reason


def test_an_edited_line_with_a_recomputed_hash_is_found_at_the_next_line(tmp_path):
    path = _log(tmp_path)
    lines = _lines(path)
    line = json.loads(lines[1])
    line["participants"] = ["hospital_a"]
    line["hash"] = sha256(canonical({k: v for k, v in line.items() if k != "hash"}))
    lines[1] = canonical(line) + b"\n"
    _rewrite(path, lines)
    report = verify(path)
    assert not report.ok and report.first_bad_line == 3
    assert "prev does not match" in report.reason


def test_a_deleted_line_is_found_where_it_is_missing(tmp_path):
    path = _log(tmp_path)
    lines = _lines(path)
    del lines[2]
    _rewrite(path, lines)
    report = verify(path)
    assert not report.ok and report.first_bad_line == 3
    assert "deleted" in report.reason


def test_two_swapped_lines_are_found_at_the_first_of_them(tmp_path):
    path = _log(tmp_path)
    lines = _lines(path)
    lines[1], lines[2] = lines[2], lines[1]
    _rewrite(path, lines)
    report = verify(path)
    assert not report.ok and report.first_bad_line == 2
    assert "moved" in report.reason


def test_a_truncated_last_line_is_found(tmp_path):
    path = _log(tmp_path)
    path.write_bytes(path.read_bytes()[:-20])
    report = verify(path)
    assert not report.ok and report.first_bad_line == 5
    assert "truncated" in report.reason


def test_appending_after_a_truncated_line_is_refused(tmp_path):
    path = _log(tmp_path)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(AuditError, match="truncated"):
        AuditLog(path).append("round", round=9)


def test_a_changed_genesis_is_found_at_line_one(tmp_path):
    path = _log(tmp_path)
    lines = _lines(path)
    first = json.loads(lines[0])
    first["prev"] = "1" * 64
    first["hash"] = sha256(canonical({k: v for k, v in first.items() if k != "hash"}))
    lines[0] = canonical(first) + b"\n"
    _rewrite(path, lines)
    report = verify(path)
    assert not report.ok and report.first_bad_line == 1
    assert "genesis" in report.reason


def test_a_missing_log_is_an_audit_error(tmp_path):
    with pytest.raises(AuditError, match="no audit log"):
        verify(tmp_path / "nowhere.jsonl")


def _writer(path: str, who: str, n: int) -> None:
    log = AuditLog(path)
    for i in range(n):
        log.append("release", writer=who, i=i)


def test_two_processes_appending_at_once_keep_one_chain(tmp_path):
    path = tmp_path / "audit.jsonl"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), who, 200)) for who in ("a", "b")]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert [proc.exitcode for proc in procs] == [0, 0]
    report = verify(path)
    assert report.ok, report.summary()
    assert report.lines == 400
    writers = [json.loads(raw)["writer"] for raw in _lines(path)]
    assert writers.count("a") == writers.count("b") == 200


# -- the command line ------------------------------------------------------------------


def _cli():
    root = typer.Typer()
    root.add_typer(audit_app, name="audit")
    return root


def test_cli_verify_exits_0_with_a_summary_for_an_intact_log(tmp_path):
    path = _log(tmp_path, 3)
    result = CliRunner().invoke(_cli(), ["audit", "verify", str(path)])
    assert result.exit_code == 0, result.output
    assert "intact: 3 lines" in result.output and head(path) in result.output


def test_cli_verify_exits_1_naming_the_line_and_reason(tmp_path):
    path = _log(tmp_path)
    lines = _lines(path)
    del lines[3]
    _rewrite(path, lines)
    result = CliRunner().invoke(_cli(), ["audit", "verify", str(path)])
    assert result.exit_code == 1
    assert "line 4:" in result.output and "deleted" in result.output


def test_cli_show_prints_the_last_lines(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl")
    for event in ("run-start", "vocabulary", "round", "run-end"):
        log.append(event)
    result = CliRunner().invoke(_cli(), ["audit", "show", str(log.path), "--last", "2"])
    assert result.exit_code == 0, result.output
    assert "round" in result.output and "run-end" in result.output
    assert "run-start" not in result.output and "vocabulary" not in result.output
