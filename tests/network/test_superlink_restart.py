"""The consortium's host dies mid-run and comes back: the sites rejoin, the run resumes.

Across the test network: `fedehr server start` and `fedehr run start` on
`consortium`, a site daemon on hospital_a and on hospital_b. Once round 1 is
checkpointed, every process on the consortium's host is SIGKILLed (a power
cut: the SuperLink, its ServerApp, the server and run commands); its disk, with
the SuperLink's database and the checkpoints, is kept. The operator starts the
server again: the hospitals' registrations are still in the database, the site
daemons (never touched) reconnect over TLS by themselves, and `fedehr run start
--resume` continues from round 1's checkpoint. Each ledger charges each round once.

Slow (about six minutes on two busy cores), so it runs only with
FEDEHR_SLOW_NETWORK_TESTS=1.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.e2e.conftest import FAST, NO_NOTES, dp_rounds

from .federation import NetworkFederation, tail, wait_until

pytestmark = [
    pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1500),
    pytest.mark.skipif(os.environ.get("FEDEHR_SLOW_NETWORK_TESTS") != "1",
                       reason="slow (~6 min): set FEDEHR_SLOW_NETWORK_TESTS=1 to run it"),
]


def _read_json(path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def test_a_consortium_host_killed_mid_run_resumes_with_the_sites_rejoining(network, tmp_path,
                                                                        hospitals, anchor):
    # round_timeout 150: a site's worker may first spend up to PULL_TIMEOUT_SECONDS on the
    # task whose arrays died with the old SuperLink (client/worker.py)
    fed = NetworkFederation.create(network, tmp_path / "fed", hospitals, anchor=anchor,
                                   federation={**FAST, **NO_NOTES, "rounds": 2,
                                               "min_sites": 2, "round_timeout": 150},
                                   site={"reconnect_max_seconds": 10})
    cfg = fed.local.config
    fed.start_server()
    sites = fed.start_sites("hospital_a", "hospital_b")
    run = fed.launch()
    store = cfg.workdir / "state" / "resume.json"
    wait_until(lambda: _read_json(store).get("round", 0) >= 1, 900, run, fed.root / "run.log",
               "round 1 to be checkpointed")
    killed = network.kill_host("consortium")
    down_at = time.monotonic()
    database = cfg.workdir / "state" / "superlink.db"
    assert killed and database.exists()

    fed.start_server()  # the operator, on the rebooted host
    registered = (fed.root / "server.log").read_text().rsplit("Next: start the sites", 2)[-2]
    for name, proc in sites.items():
        fed.wait_connected(name, proc, timeout=300)
    rejoined = time.monotonic() - down_at
    resumed = fed.launch(resume=True)
    log = fed.root / "run.log"
    wait_until(lambda: _read_json(cfg.status_path).get("phase") in ("finished", "failed"),
               900, resumed, log, "the resumed run to end")
    status = _read_json(cfg.status_path)
    print(f"\nconsortium host killed at round 1; sites connected again {rejoined:.0f} s "
          f"later (server restart included)")
    assert status["phase"] == "finished", tail(log)
    assert [e["round"] for e in status["rounds"]] == [0, 1, 2]  # round 1 not trained again
    assert status["rounds"][2]["participants"] == ["hospital_a", "hospital_b"]
    assert registered.count("registered before") == 2  # the database kept both keys
    for name, proc in sites.items():
        assert proc.poll() is None  # no operator at the hospitals
        assert dp_rounds(fed, name) == ["local/round-1", "local/round-2"]
