"""`fedehr run start` without a terminal prints one plain line per event and the final
table once (issue 17, defect 4), and follows its own run, not the status an earlier one left."""

from __future__ import annotations

import io
import json
import threading
import time

import pytest
from rich.console import Console

from fedehr.server import runs, superlink
from fedehr.server.config import FederationConfig, SuperLinkConfig
from fedehr.server.runs import progress_lines, run_file, watch
from fedehr.server.status import StatusFile
from fedehr.shared.processes import ProcessError


def _round(n: int) -> dict:
    return {"round": n, "participants": ["hospital_a", "hospital_b"], "anchor_loss": 3.5 - n,
            "epsilon": {"hospital_a": 0.5 * n, "hospital_b": 0.6 * n}}


def test_without_a_terminal_each_round_is_one_line_and_the_table_is_printed_once(tmp_path):
    cfg = FederationConfig(name="demo", workdir=tmp_path, rounds=2,
                           superlink=SuperLinkConfig(insecure=True))
    status = StatusFile(cfg.status_path)
    status.add_round(_round(1))
    status.add_round(_round(2))
    status.update(phase="finished", message="2 rounds", result={"rounds": 2})
    out = io.StringIO()
    result = watch(cfg, "1", Console(file=out, width=200), poll=0.01)
    lines = out.getvalue().splitlines()
    assert result == {"rounds": 2}
    assert [line for line in lines if line.startswith("round ")] == [
        "round 1 done: sites hospital_a, hospital_b; anchor loss 2.500; site eval loss -; "
        "epsilon a:0.50 b:0.60; rejected -",
        "round 2 done: sites hospital_a, hospital_b; anchor loss 1.500; site eval loss -; "
        "epsilon a:1.00 b:1.20; rejected -"]
    assert sum("federation demo: finished" in line for line in lines) == 1


def test_progress_lines_name_only_what_changed():
    before = {"phase": "training", "rounds": [_round(1)]}
    after = {"phase": "training", "rounds": [_round(1), _round(2)]}
    assert progress_lines(before, after) == [progress_lines(None, {"rounds": [_round(2)],
                                                                   "phase": "x"})[1]]
    assert progress_lines(after, after) == []
    late = {**after, "rounds": [_round(1), {**_round(2), "late": ["hospital_b"]}]}
    assert progress_lines(before, late)[0].endswith("rejected -; late hospital_b")
    assert progress_lines(after, {**after, "phase": "failed", "message": "site a left"}) == [
        "phase failed: site a left"]


def test_a_resumed_run_is_not_taken_for_the_failed_run_whose_status_is_still_there(
        tmp_path, monkeypatch):
    # `fedehr run start --resume` keeps the status file; until the new ServerApp writes
    # it says "failed" (found across hosts: tests/network/test_consortium_outage.py).
    # No SuperLink here: Flower's own view of the run (`flwr ls`) is "running".
    monkeypatch.setattr(runs, "flower_run_status", lambda cfg, run_id: "running")
    cfg = FederationConfig(name="demo", workdir=tmp_path, rounds=2,
                           superlink=SuperLinkConfig(insecure=True))
    StatusFile(cfg.status_path).update(phase="failed", message="round 2: 0 usable updates")
    run_file(cfg).write_text(json.dumps({"run-id": "2", "started_at": time.time() + 1}))

    def resumed_server_app():
        time.sleep(1.5)
        StatusFile(cfg.status_path).update(phase="finished", result={"rounds": 2})

    writer = threading.Thread(target=resumed_server_app)
    writer.start()
    result = watch(cfg, "2", Console(file=io.StringIO(), width=200), poll=0.05)
    writer.join()
    assert result == {"rounds": 2}


def _training(tmp_path) -> FederationConfig:
    cfg = FederationConfig(name="demo", workdir=tmp_path, rounds=2,
                           superlink=SuperLinkConfig(insecure=True))
    StatusFile(cfg.status_path).update(phase="training", message="round 1")
    return cfg


def test_a_flwr_command_that_does_not_answer_is_a_one_line_error(tmp_path, monkeypatch):
    # seen in `make demo` on a host at load 10: `flwr ls` took over 60 s and the
    # demo died with subprocess.TimeoutExpired's traceback
    slow = tmp_path / "flwr"
    slow.write_text("#!/bin/sh\nsleep 5\n")
    slow.chmod(0o755)
    monkeypatch.setattr(superlink, "bin_path", lambda name: str(slow))
    with pytest.raises(ProcessError, match=r"`flwr ls fedehr` did not answer within 0 s"):
        superlink.flwr_cli(tmp_path, "ls", "fedehr", timeout=0.3)


def test_the_watch_outlasts_unanswered_flower_checks(tmp_path, monkeypatch):
    cfg, asked = _training(tmp_path), []

    def busy_then_running(cfg, run_id):
        asked.append(run_id)
        if len(asked) < runs.FLOWER_CHECK_TRIES:
            raise ProcessError("`flwr ls` did not answer within 60 s")
        return "running"

    monkeypatch.setattr(runs, "flower_run_status", busy_then_running)

    def server_app_finishes():
        while len(asked) < runs.FLOWER_CHECK_TRIES:
            time.sleep(0.01)
        StatusFile(cfg.status_path).update(phase="finished", result={"rounds": 2})

    writer = threading.Thread(target=server_app_finishes)
    writer.start()
    result = watch(cfg, "1", Console(file=io.StringIO()), poll=0.01, flower_check=0.02)
    writer.join()
    assert result == {"rounds": 2}


def test_the_watch_gives_up_when_flower_never_answers(tmp_path, monkeypatch):
    cfg = _training(tmp_path)

    def unanswered(cfg, run_id):
        raise ProcessError("`flwr ls` did not answer within 60 s", fix="check the load")

    monkeypatch.setattr(runs, "flower_run_status", unanswered)
    with pytest.raises(runs.RunFailed, match="3 times in a row") as failed:
        watch(cfg, "1", Console(file=io.StringIO()), poll=0.01, flower_check=0.02)
    assert failed.value.fix == "check the load"
