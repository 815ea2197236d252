"""The server is killed after a round; the run resumes and no budget is spent twice."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from fedehr.server import runs

from .conftest import NO_NOTES, dp_rounds, make_federation, phase_round, wait_for

pytestmark = pytest.mark.e2e


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
        wait_for(lambda: phase_round(fed)[1] >= 1 and store.exists()
                 and json.loads(store.read_text())["round"] >= 1, 600, "round 1")
        fed.kill_server()
        fed.restart_server()
        run_id = fed.launch(resume=True)
        result = runs.watch(fed.config, run_id, Console(quiet=True), timeout=900)
    finally:
        fed.stop()
    assert [e["round"] for e in result["history"]] == [0, 1, 2]
    for name in fed.site_yamls:
        assert dp_rounds(fed, name) == ["local/round-1", "local/round-2"]
