"""Shared pieces of the end-to-end tests: small synthetic hospitals and the anchor.

These tests start real Flower processes on loopback (SuperLink with TLS and
hospital authentication, one `fedehr site start` daemon per hospital).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from fedehr.client.privacy import PrivacyLedger
from fedehr.server.local_federation import HospitalSpec, LocalFederation
from fedehr.server.status import read_status
from fedehr.shared.data.anchor import fetch_anchor
from fedehr.shared.data.synth import synthesize

REPO = Path(__file__).resolve().parents[2]
TAP_APP = "tests.e2e.tap_app:app"


@pytest.fixture(scope="session", autouse=True)
def importable_tests():
    """Flower's own processes (flwr run, the ServerApp, the ClientApps) import the tap app."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(REPO) + (os.pathsep + old if old else "")
    yield
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="session")
def anchor() -> Path:
    return fetch_anchor()


@pytest.fixture(scope="session")
def hospitals(tmp_path_factory) -> list[HospitalSpec]:
    out = tmp_path_factory.mktemp("hospitals")
    return [HospitalSpec(s.name, Path(s.path), s.harmonisation)
            for s in synthesize(out / "h", sites=3, patients=300, seed=7)]


NO_NOTES = {"model": {"preset": "tiny", "max_len": 48, "notes": False}}


def wait_for(predicate, timeout: float, what: str):
    """Poll until `predicate()` is truthy and return its value; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


FAST = {"round_timeout": 90, "vocabulary": {"min_count": 5},
        "model": {"preset": "tiny", "max_len": 48},
        # 2 public anchor windows per step: mixing exercised, at a quarter of the batch
        "local": {"steps": 4, "batch_size": 8, "lr": 2e-3, "anchor_per_step": 2},
        "warm_start": {"steps": 5, "batch_size": 8}}


def make_federation(root: Path, hospitals, anchor: Path, *, federation: dict | None = None,
                    site: dict | None = None, env: dict | None = None) -> LocalFederation:
    fed_cfg = {**FAST, **(federation or {})}
    fed = LocalFederation.create(root, hospitals, anchor=anchor, federation=fed_cfg,
                                 site={"training": {"threads": 1}, **(site or {})},
                                 site_env=env or {})
    fed.clientapp = TAP_APP
    return fed


def phase_round(fed) -> tuple[str, int]:
    """The run's phase and round from status.json; a failed run fails the test at once."""
    status = read_status(fed.config.status_path) or {}
    if status.get("phase") == "failed":
        raise AssertionError(f"the run failed: {status.get('message')}")
    return status.get("phase", ""), int(status.get("round", 0))


def dp_rounds(fed, name: str) -> list[str]:
    """The rounds a site's ledger charged for DP-SGD, sorted."""
    ledger = PrivacyLedger.open(fed.root / "site-state" / name / "privacy-ledger.json",
                                epsilon_budget=8.0, delta=1e-5)
    return sorted(e.round_id.split(":")[0] for e in ledger.entries if e.purpose == "dp-sgd")
