"""A straggler on a 1 Mbit/s link: the federation goes on, and what its rounds cost.

Across the test network: the SuperLink in `consortium`, hospital_a and
hospital_b each with `fedehr site start` in its own namespace. Rounds 1 and 2
run on unlimited links; once round 2 is recorded, hospital_b's link is limited
to 1 Mbit/s each way with a token-bucket filter (`tc ... tbf`, both ends of its
veth), so in rounds 3 and 4 its model download and update upload (3.2 MB each
way, 26 s each) alone take longer than the 40 s `round_timeout`. The round
times with and without the straggler, and the round table the operator sees
(`fedehr run status`), are printed (pytest -s).

What holds: the run finishes, hospital_a is in every round, each ledger charges
each round once. What does not, yet (the xfail below): the round timeout does not
bound a round. Flower's `Grid.pull_messages` returns a reply's metadata as soon
as the site pushed it and then pulls its arrays for as long as they take to
upload (flwr 1.42: up to 2 h, `PULL_MAX_TIME`), and `server/streaming.py` checks
its deadline only between pulls, so a straggler whose upload starts before the
deadline holds the round until the upload ends: rounds of 62-66 s at
`round_timeout` 40, the straggler included. And nothing names a late hospital:
the operator sees it only missing from a round's sites.

Slow (about four minutes on two busy cores), so it runs only with
FEDEHR_SLOW_NETWORK_TESTS=1.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.e2e.conftest import FAST, NO_NOTES, dp_rounds

from .federation import NetworkFederation, fedehr, tail, wait_until

pytestmark = [
    pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800),
    pytest.mark.skipif(os.environ.get("FEDEHR_SLOW_NETWORK_TESTS") != "1",
                       reason="slow (~4 min): set FEDEHR_SLOW_NETWORK_TESTS=1 to run it"),
]
# A 4-step round of the tiny model takes 13-16 s on two busy cores, all of it; at 1 Mbit/s
# hospital_b's transfers alone take 51 s.
ROUND_TIMEOUT = 40
SLACK = 15  # a round's own work besides waiting for sites (anchor steps, checkpoint)
MBIT = 1


def _status(fed) -> dict:
    try:
        return json.loads(fed.local.config.status_path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _rounds_done(fed) -> int:
    return len(_status(fed).get("rounds", [])) - 1  # entry 0 is the warm start


@pytest.fixture(scope="module")
def straggled(module_network, tmp_path_factory, hospitals, anchor):
    """A 4-round run, hospital_b limited to MBIT from round 3; its status and the table."""
    network = module_network
    fed = NetworkFederation.create(network, tmp_path_factory.mktemp("straggler") / "fed",
                                   hospitals, anchor=anchor,
                                   federation={**FAST, **NO_NOTES, "rounds": 4,
                                               "min_sites": 1,
                                               "round_timeout": ROUND_TIMEOUT})
    fed.start_server()
    sites = {name: fed.start_site(name) for name in ("hospital_a", "hospital_b")}
    for name, proc in sites.items():
        fed.wait_connected(name, proc)
    run = fed.launch()
    log = fed.root / "run.log"
    try:
        wait_until(lambda: _rounds_done(fed) >= 2, 900, run, log, "round 2 to end")
        network.limit("hospital_b", MBIT)
        before = network.link_bytes("hospital_b")
        wait_until(lambda: _status(fed).get("phase") in ("finished", "failed"), 900, run, log,
                   "the run to finish")
    finally:
        network.unlimit("hospital_b")
    after = network.link_bytes("hospital_b")
    status = _status(fed)
    assert status["phase"] == "finished", tail(log)
    table = fedehr(network, "consortium", "run", "status", "--config",
                   str(fed.local.fed_yaml)).stdout
    rounds = status["rounds"][1:]
    print(f"\nround_timeout {ROUND_TIMEOUT} s; hospital_b limited to {MBIT} Mbit/s from "
          f"round 3 (it received {(after['rx'] - before['rx']) / 1e6:.1f} MB and sent "
          f"{(after['tx'] - before['tx']) / 1e6:.1f} MB after that)\n"
          f"{'round':>5} {'b at 1 Mbit/s':>13} {'train s':>8} {'round s':>8}  sites")
    for entry in rounds:
        limited = "yes" if entry["round"] >= 3 else "no"
        print(f"{entry['round']:>5} {limited:>13} {entry['train_seconds']:>8.1f} "
              f"{entry['seconds']:>8.1f}  {', '.join(entry['participants'])}")
    print("what the operator sees (`fedehr run status`):\n" + table)
    return {"fed": fed, "rounds": rounds, "carried": after["rx"] - before["rx"]}


def test_the_federation_goes_on_with_a_straggler_on_a_1_mbit_link(straggled):
    for entry in straggled["rounds"]:
        assert "hospital_a" in entry["participants"]
    assert straggled["carried"] > 2e6  # the limited link carried the models
    for name in ("hospital_a", "hospital_b"):
        charged = dp_rounds(straggled["fed"], name)
        assert len(charged) == len(set(charged)), charged  # each round charged once


@pytest.mark.xfail(strict=True, reason="the round timeout does not bound a reply whose "
                   "upload began before it: Flower's Grid.pull_messages pulls the arrays for "
                   "up to 2 h; server/streaming.py needs a deadline on that pull (see the "
                   "module docstring)")
def test_a_straggler_costs_at_most_the_round_timeout(straggled):
    for entry in straggled["rounds"]:
        assert entry["train_seconds"] <= ROUND_TIMEOUT + SLACK, entry
    assert [e["participants"] for e in straggled["rounds"][2:]] == [["hospital_a"]] * 2
