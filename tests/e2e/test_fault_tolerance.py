"""Sites and the server fail; the federation carries on and no budget is spent twice."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from fedehr.client.privacy import PrivacyLedger
from fedehr.server import runs
from fedehr.server.status import read_status

from .conftest import NO_NOTES, make_federation, wait_for

pytestmark = pytest.mark.e2e

def _phase_round(fed) -> tuple[str, int]:
    status = read_status(fed.config.status_path) or {}
    if status.get("phase") == "failed":
        raise AssertionError(f"the run failed: {status.get('message')}")
    return status.get("phase", ""), int(status.get("round", 0))


def _dp_rounds(fed, name: str) -> list[str]:
    ledger = PrivacyLedger.open(fed.root / "site-state" / name / "privacy-ledger.json",
                                epsilon_budget=8.0, delta=1e-5)
    return sorted(e.round_id.split(":")[0] for e in ledger.entries if e.purpose == "dp-sgd")


def test_a_site_killed_mid_round_does_not_stop_the_run_and_rejoins(tmp_path, hospitals,
                                                                     anchor):
    fed = make_federation(tmp_path, hospitals, anchor, federation={
        # 60 s: under load a 4-step round took 32 s at one site and 36 s at the other
        **NO_NOTES, "rounds": 5, "min_sites": 2, "round_timeout": 60})
    try:
        fed.start_all()
        run_id = fed.launch()
        wait_for(lambda: _phase_round(fed) == ("training", 2), 600, "round 2 to start")
        fed.kill_site_node("hospital_b")  # mid-round: b's update of round 2 never arrives
        result = runs.watch(fed.config, run_id, Console(quiet=True), timeout=900)
    finally:
        fed.stop()
    participants = {e["round"]: e["participants"] for e in result["history"][1:]}
    assert participants[1] == ["hospital_a", "hospital_b", "hospital_c"]
    assert "hospital_b" not in participants[2] and len(participants[2]) == 2
    # b's daemon restarts its SuperNode once Flower lets the old session go (about a
    # minute after the crash); b then joins the rounds again
    assert "hospital_b" in participants[4] + participants[5]
    log = (tmp_path / "site-state" / "hospital_b.daemon.log").read_text()
    assert "restart 1/" in log


def test_a_server_killed_after_a_round_resumes_without_charging_twice(tmp_path, hospitals,
                                                                       anchor):
    # round_timeout: a site's worker may first spend up to PULL_TIMEOUT_SECONDS on the
    # task whose arrays died with the old SuperLink (client/worker.py)
    fed = make_federation(tmp_path, hospitals, anchor, federation={
        **NO_NOTES, "rounds": 2, "min_sites": 3, "round_timeout": 150})
    try:
        fed.start_all()
        fed.launch()
        store = fed.config.workdir / "state" / "resume.json"
        wait_for(lambda: _phase_round(fed)[1] >= 1 and store.exists()
                 and json.loads(store.read_text())["round"] >= 1, 600, "round 1")
        fed.kill_server()
        fed.restart_server()
        run_id = fed.launch(resume=True)
        result = runs.watch(fed.config, run_id, Console(quiet=True), timeout=900)
    finally:
        fed.stop()
    assert [e["round"] for e in result["history"]] == [0, 1, 2]
    for name in fed.site_yamls:
        assert _dp_rounds(fed, name) == ["local/round-1", "local/round-2"]
