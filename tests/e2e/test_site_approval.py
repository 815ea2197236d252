"""Hospitals run only bundles they approved, with their own installed code.

One federation of three hospitals with site workers (the default `fedehr
site start`): hospital_c approves only a bundle hash that is not the one
shipped, so it refuses; the run completes with hospital_a and hospital_b.
Then the operator ships a bundle whose clientapp component points at other
code (tests/e2e/marker_app.py): every site refuses it and it never runs.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from rich.console import Console

from fedehr.server import runs
from fedehr.server.bundle import CLIENTAPP

from .conftest import NO_NOTES, make_federation

pytestmark = pytest.mark.e2e

MARKER_APP = "tests.e2e.marker_app:app"
UNRELATED_HASH = "0" * 64


@pytest.fixture(scope="module")
def federation(tmp_path_factory, hospitals, anchor):
    root = tmp_path_factory.mktemp("approval-federation")
    fed = make_federation(root, hospitals, anchor,
                          federation={**NO_NOTES, "rounds": 2, "min_sites": 2, "round_timeout": 60},
                          env={"FEDEHR_MARKER_DIR": str(root / "marker")})
    fed.clientapp = CLIENTAPP  # the bundle `fedehr run start` ships, no test tap
    path = fed.site_yamls["hospital_c"]
    site = yaml.safe_load(path.read_text())
    site["approval"] = {"bundle_hashes": [UNRELATED_HASH]}  # trusts no signature
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    try:
        printed = subprocess.run([sys.executable, "-m", "fedehr.shared.cli", "run", "bundle-hash",
                                  "--config", str(fed.fed_yaml)], capture_output=True,
                                 text=True, check=True).stdout.strip()
        fed.start_all()
        run_id = fed.launch()
        result = runs.watch(fed.config, run_id, Console(quiet=True), timeout=600)
        shipped = json.loads(runs.run_file(fed.config).read_text())
        fed.clientapp = MARKER_APP
        foreign_id = fed.launch()
        try:
            runs.watch(fed.config, foreign_id, Console(quiet=True), timeout=300)
            foreign_failure = None
        except runs.RunFailed as exc:
            foreign_failure = exc.message
        foreign = json.loads(runs.run_file(fed.config).read_text())
        yield {"fed": fed, "result": result, "shipped": shipped, "foreign": foreign,
               "printed_hash": printed,
               "foreign_failure": foreign_failure, "marker": root / "marker"}
    finally:
        fed.stop()


def _state(fed, name):
    return fed.root / "site-state" / name


def _audit(fed, name) -> list[dict]:
    path = _state(fed, name) / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_run_completes_with_the_sites_that_approved_the_bundle(federation):
    assert federation["shipped"]["signed"] is True
    rounds = federation["result"]["history"][1:]
    assert len(rounds) == 2
    for entry in rounds:
        assert entry["participants"] == ["hospital_a", "hospital_b"]


def test_the_operator_can_print_the_hash_sites_approve(federation):
    assert federation["printed_hash"] == federation["shipped"]["bundle-hash"]


def test_the_refusing_site_logs_and_audits_why_with_the_bundle_hash(federation):
    fed, digest = federation["fed"], federation["shipped"]["bundle-hash"]
    log = (_state(fed, "hospital_c") / "logs" / "site.log").read_text()
    assert f"bundle {digest} is not approved at this site" in log
    refusals = [e for e in _audit(fed, "hospital_c") if e["event"] == "refusal"]
    assert refusals and all(e["bundle_hash"] == digest for e in refusals[:1])
    assert "not among the approved bundle hashes" in refusals[0]["reason"]
    assert not [e for e in _audit(fed, "hospital_c") if e["event"] in ("train", "release")]
    assert [e for e in _audit(fed, "hospital_a") if e["event"] == "train"]


def test_a_bundle_pointing_at_other_code_is_refused_and_never_run(federation):
    fed = federation["fed"]
    assert federation["foreign_failure"] is not None  # no site took part
    assert not federation["marker"].exists()  # the foreign module was never imported
    foreign_hash = federation["foreign"]["bundle-hash"]
    for name in ("hospital_a", "hospital_b"):
        reasons = [e["reason"] for e in _audit(fed, name)
                   if e["event"] == "refusal" and e.get("bundle_hash") == foreign_hash]
        assert reasons and f"asks for ClientApp '{MARKER_APP}'" in reasons[0]
