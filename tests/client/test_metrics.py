"""A site's /metrics and /healthz, read from its privacy ledger and activity log."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fedehr.client import activity
from fedehr.client.config import PrivacyConfig, SiteConfig
from fedehr.client.metrics import SiteCollector
from fedehr.client.privacy import PrivacyLedger
from fedehr.shared.monitoring import MonitoringServer

TRAINS = [  # steps, examples, seconds, patients of two rounds, as the trainer records them
    {"round_id": "north/round-1", "steps": 4, "examples": 32, "seconds": 2.0, "patients": 180},
    {"round_id": "north/round-2", "steps": 6, "examples": 48, "seconds": 1.5, "patients": 182},
]


@pytest.fixture
def site(tmp_path) -> SiteConfig:
    return SiteConfig(name="hospital_a", data=tmp_path / "meds", state_dir=tmp_path / "state",
                      insecure=True, privacy=PrivacyConfig(epsilon=8.0, delta=1e-5))


@pytest.fixture
def ledger(site) -> PrivacyLedger:
    """The ledger after a vocabulary round (two releases) and the two training rounds."""
    p = site.privacy
    ledger = PrivacyLedger.open(site.ledger_path, epsilon_budget=p.epsilon, delta=p.delta,
                                accountant=p.accountant)
    for name in ("north/vocab-counts", "north/vocab-values"):
        ledger.charge(5.0, 1.0, 1, purpose="vocab-release", round_id=name)
        activity.record(site.state_dir, "release", round_id=name, epsilon=ledger.spent())
    for train in TRAINS:
        ledger.charge(1.2, 8 / 180, train["steps"], purpose="dp-sgd",
                      round_id=train["round_id"] + ":abc")
        activity.record(site.state_dir, "train", **train, epsilon=ledger.spent(),
                        epsilon_budget=p.epsilon, noise_multiplier=1.2)
        activity.record(site.state_dir, "evaluate", round_id=train["round_id"], patients=20,
                        loss=4.2)
    activity.record(site.state_dir, "refusal", message_type="train",
                    reason="privacy budget exceeded")
    return ledger


@pytest.fixture
def served(site, ledger):
    with MonitoringServer([SiteCollector(site)], host="127.0.0.1", port=0) as server:
        yield server


def scrape(url: str) -> dict:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}
    return {"families": families, "samples": samples}


def value(scraped: dict, name: str, **labels) -> float:
    return scraped["samples"][(name, tuple(sorted({"site": "hospital_a", **labels}.items())))]


def test_epsilon_spent_remaining_and_budget_match_the_ledger(served, ledger):
    m = scrape(served.url)
    assert ledger.spent() > 0
    assert value(m, "fedehr_site_epsilon_spent") == pytest.approx(ledger.spent())
    assert value(m, "fedehr_site_epsilon_remaining") == pytest.approx(ledger.remaining())
    assert value(m, "fedehr_site_epsilon_budget") == ledger.epsilon_budget


def test_a_scrape_never_writes_the_ledger_even_when_site_yaml_changed_the_budget(site,
                                                                                  ledger):
    before = ledger.path.read_bytes()
    site.privacy.epsilon = 12.0  # PrivacyLedger.open would record this budget change
    with MonitoringServer([SiteCollector(site)], host="127.0.0.1", port=0) as server:
        assert value(scrape(server.url), "fedehr_site_epsilon_budget") == 12.0
    assert ledger.path.read_bytes() == before


def test_releases_are_counted_by_kind_from_the_ledger(served):
    m = scrape(served.url)
    assert value(m, "fedehr_site_releases_total", kind="vocab-release") == 2
    assert value(m, "fedehr_site_releases_total", kind="dp-sgd") == len(TRAINS)
    assert m["families"]["fedehr_site_releases"].type == "counter"


def test_local_steps_sum_every_training_round(served, ledger):
    m = scrape(served.url)
    dp_steps = sum(e.steps for e in ledger.entries if e.purpose == "dp-sgd")
    assert value(m, "fedehr_site_local_steps_total") == sum(t["steps"] for t in TRAINS)
    assert value(m, "fedehr_site_local_steps_total") == dp_steps


def test_throughput_patients_and_time_come_from_the_last_round(served, site):
    m = scrape(served.url)
    last = TRAINS[-1]
    last_event = [e for e in activity.read(site.state_dir) if e["kind"] == "train"][-1]
    assert value(m, "fedehr_site_samples_per_second") == pytest.approx(
        last["examples"] / last["seconds"])
    assert value(m, "fedehr_site_patients") == last["patients"]
    assert value(m, "fedehr_site_last_round_timestamp_seconds") == pytest.approx(
        last_event["time"])


def test_refusals_count_as_errors(served, site):
    assert value(scrape(served.url), "fedehr_site_errors_total") == 1
    activity.record(site.state_dir, "refusal", message_type="train", reason="bad vocabulary")
    assert value(scrape(served.url), "fedehr_site_errors_total") == 2  # read at scrape time


def test_a_new_site_exports_its_full_budget_and_creates_no_ledger(site):
    with MonitoringServer([SiteCollector(site)], host="127.0.0.1", port=0) as server:
        m = scrape(server.url)
    assert value(m, "fedehr_site_epsilon_spent") == 0
    assert value(m, "fedehr_site_epsilon_remaining") == site.privacy.epsilon
    assert value(m, "fedehr_site_local_steps_total") == 0
    assert "fedehr_site_samples_per_second" not in m["families"]
    assert not site.ledger_path.exists()


def _health(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_healthz_is_503_once_the_supernode_is_gone(site, ledger):
    supernode = {"alive": True}
    with MonitoringServer([SiteCollector(site)], host="127.0.0.1", port=0,
                          health=lambda: supernode["alive"], service="site hospital_a") as s:
        assert _health(s.url) == (200, {"status": "ok", "service": "site hospital_a"})
        supernode["alive"] = False
        assert _health(s.url) == (503, {"status": "down", "service": "site hospital_a"})


def test_the_site_endpoint_binds_loopback_unless_site_yaml_exposes_it(site):
    from fedehr.client.metrics import metrics_server

    assert metrics_server(site).host == "127.0.0.1"
    exposed = SiteConfig(name=site.name, data=site.data, state_dir=site.state_dir,
                         insecure=True, metrics_host="0.0.0.0")
    assert metrics_server(exposed).host == "0.0.0.0"
