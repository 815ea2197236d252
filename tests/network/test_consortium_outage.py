"""The consortium drops off the network for longer than Flower's windows; the sites wait.

Across the test network: the SuperLink in `consortium`, hospital_a and
hospital_b each in its own namespace with `fedehr site start`. Once both are
connected, every link is cut at the consortium's end (the consortium's own
uplink failing; the SuperLink keeps running) for OUTAGE seconds: longer than
Flower's heartbeat window (the SuperLink drops a node after 2 x 30 s without a
heartbeat) and its retry cap (a SuperNode's tries are at most 20 s apart). In a
real consortium an outage lasts hours; the daemon's own backoff is shortened
here by site.yaml `reconnect_max_seconds: 10`. The site daemons stay up, say
"consortium unreachable since ..." in `fedehr site status` and 0 in the
`fedehr_site_consortium_reachable` gauge, and once the links come back rejoin
by themselves: a run started afterwards trains both, no operator involved.

A SuperNode killed after joining is refused by the SuperLink for about a minute
(its old session is still online there); the daemon restarts it with backoff
until it is let back in, where a site refused at its first start would stop.

Slow (about five minutes on two busy cores), so it runs only with
FEDEHR_SLOW_NETWORK_TESTS=1.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import pytest

from tests.e2e.conftest import FAST, NO_NOTES, dp_rounds

from .federation import NetworkFederation, tail, wait_until

pytestmark = [
    pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1500),
    pytest.mark.skipif(os.environ.get("FEDEHR_SLOW_NETWORK_TESTS") != "1",
                       reason="slow (~5 min): set FEDEHR_SLOW_NETWORK_TESTS=1 to run it"),
]
OUTAGE = 100.0  # seconds: past Flower's 60 s heartbeat window and 20 s retry cap
METRICS_PORT = 9101
SCRAPE = ("import sys, urllib.request\n"
          "print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())")


def _reachable(fed, name: str) -> float | None:
    """hospital_a's fedehr_site_consortium_reachable, scraped on its own host."""
    done = fed.net.run(name, [sys.executable, "-c", SCRAPE,
                              f"http://127.0.0.1:{METRICS_PORT}/metrics"])
    for line in done.stdout.splitlines():
        if line.startswith("fedehr_site_consortium_reachable{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def _said(fed, name: str) -> str:
    return " ".join(fed.site_status(name).split())


def test_sites_wait_out_a_lost_consortium_and_rejoin_by_themselves(network, tmp_path,
                                                                   hospitals, anchor):
    fed = NetworkFederation.create(network, tmp_path / "fed", hospitals, anchor=anchor,
                                   federation={**FAST, **NO_NOTES, "rounds": 1,
                                               "min_sites": 2},
                                   site={"reconnect_max_seconds": 10})
    fed.set_site("hospital_a", metrics_port=METRICS_PORT)
    fed.start_server()
    sites = fed.start_sites("hospital_a", "hospital_b")
    assert _reachable(fed, "hospital_a") == 1

    network.set_consortium_links(up=False)
    cut = time.monotonic()
    # a SuperNode notices at its next pull (its HTTP read times out after 30 s)
    said = {}

    def reports_outage(name: str) -> bool:
        said[name] = _said(fed, name)
        return "consortium unreachable since" in said[name]

    for name, proc in sites.items():
        wait_until(lambda n=name: reports_outage(n), 120, proc, fed.site_log(name),
                   f"{name}'s status to report the outage")
    assert _reachable(fed, "hospital_a") == 0
    time.sleep(max(0.0, cut + OUTAGE - time.monotonic()))
    late = _said(fed, "hospital_b")  # after Flower's windows: still waiting, still up
    network.set_consortium_links(up=True)
    outage = time.monotonic() - cut

    for name, proc in sites.items():
        fed.wait_connected(name, proc, timeout=240)
    back = time.monotonic() - cut - outage
    assert _reachable(fed, "hospital_a") == 1
    run = fed.launch()
    log = fed.root / "run.log"
    wait_until(lambda: _phase(fed) in ("finished", "failed"), 900, run, log, "the run to end")
    status = json.loads(fed.local.config.status_path.read_text())
    print(f"\noutage {outage:.0f} s; both sites connected again {back:.0f} s after the links "
          f"came back\nhospital_a said during it: {said['hospital_a'][:400]}\n"
          f"hospital_b said after {outage:.0f} s: {late[:400]}")
    assert status["phase"] == "finished", tail(log)
    assert status["rounds"][1]["participants"] == ["hospital_a", "hospital_b"]
    for name, proc in sites.items():
        assert proc.poll() is None  # the daemons rode it out
        assert "retrying every" in said[name]
        assert "10.77.0.1" in said[name]  # the cause names the consortium's address
        daemon_log = fed.site_log(name).read_text()
        assert "consortium unreachable:" in daemon_log
        assert "reachable again after" in daemon_log
        assert len(dp_rounds(fed, name)) == 1
    assert "consortium unreachable since" in late and "retrying every" in late


def _phase(fed) -> str:
    try:
        return json.loads(fed.local.config.status_path.read_text()).get("phase", "")
    except (FileNotFoundError, json.JSONDecodeError):
        return ""


def test_a_supernode_lost_after_joining_is_retried_until_let_back_in(
        network, tmp_path, hospitals, anchor):
    # Killed while connected, its old session stays online at the SuperLink until its
    # heartbeat lapses (about a minute): the restarted SuperNode is refused meanwhile,
    # which at a first start would stop the daemon; after joining, it is retried every 5 s.
    fed = NetworkFederation.create(network, tmp_path / "fed", hospitals[:1], anchor=anchor,
                                   federation={"min_sites": 1},
                                   site={"reconnect_max_seconds": 20})
    fed.start_server()
    site = fed.start_site("hospital_a", isolation="subprocess")
    fed.wait_connected("hospital_a", site)
    pids = json.loads((fed.root / "site-state" / "hospital_a" / "site.pid").read_text())
    os.killpg(int(pids["supernode-hospital_a"]), signal.SIGKILL)
    killed = time.monotonic()
    log = fed.site_log("hospital_a")
    wait_until(lambda: "restart 2/unlimited in 5 s" in log.read_text(), 120, site, log,
               "a restarted SuperNode to be refused and the daemon to back off")
    said = _said(fed, "hospital_a")
    fed.wait_connected("hospital_a", site, timeout=240)
    print(f"\nSuperNode killed; connected again after {time.monotonic() - killed:.0f} s\n"
          f"status meanwhile: {said[:300]}")
    daemon_log = " ".join(log.read_text().split())
    assert "[code: 2004] Failed to activate SuperNode." in daemon_log  # refused, then in
    assert "not back in the federation since" in said
    assert f"the SuperLink at {fed.superlink} answers but the SuperNode is not in: [code: " \
        "2004] Failed to activate SuperNode." in said
    assert site.poll() is None


def _trainings_started(fed, name: str) -> int:
    log = fed.root / "site-state" / name / "logs" / "worker.log"
    return log.read_text(errors="replace").count("(train) started") if log.exists() else 0


def test_an_outage_during_a_round_fails_it_and_a_resume_finishes_without_charging_twice(
        network, tmp_path, hospitals, anchor):
    # Both sites are training round 2 when the consortium drops off: no update arrives, the
    # round fails at its timeout (min_sites 2) and says to resume. The links come back, the
    # daemons rejoin by themselves, the operator resumes from round 1's checkpoint: each
    # site resends the update it stored for round 2 (same round, same start) instead of
    # training and charging it again.
    fed = NetworkFederation.create(network, tmp_path / "fed", hospitals, anchor=anchor,
                                   federation={**FAST, **NO_NOTES, "rounds": 2,
                                               "min_sites": 2, "round_timeout": 60},
                                   site={"reconnect_max_seconds": 10})
    fed.start_server()
    sites = fed.start_sites("hospital_a", "hospital_b")
    run = fed.launch()
    log = fed.root / "run.log"
    wait_until(lambda: all(_trainings_started(fed, n) >= 2 for n in sites), 900, run, log,
               "both sites to start training round 2")
    network.set_consortium_links(up=False)
    cut = time.monotonic()
    wait_until(lambda: _phase(fed) == "failed", 600, run, log, "round 2 to fail")
    failed = json.loads(fed.local.config.status_path.read_text())
    network.set_consortium_links(up=True)
    for name, proc in sites.items():
        fed.wait_connected(name, proc, timeout=300)
    back = time.monotonic() - cut
    resumed = fed.launch(resume=True)
    resumed.wait(timeout=900)  # the status file says "failed" until the resumed run writes
    status = json.loads(fed.local.config.status_path.read_text())
    print(f"\nround 2 failed: {failed.get('message', '')[:300]}\nsites connected again "
          f"{back:.0f} s after the cut (links down until the round failed)")
    assert "round 2" in failed.get("message", "") and "--resume" in failed["message"]
    assert status["phase"] == "finished", tail(log)
    assert [e["round"] for e in status["rounds"]] == [0, 1, 2]
    assert status["rounds"][2]["participants"] == ["hospital_a", "hospital_b"]
    for name, proc in sites.items():
        assert proc.poll() is None  # the daemons rode it out
        assert dp_rounds(fed, name) == ["local/round-1", "local/round-2"]  # charged once
        assert "resending the stored update of local/round-2" in \
            (fed.root / "site-state" / name / "logs" / "site.log").read_text()
